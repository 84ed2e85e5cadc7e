"""Run a function in a fresh process and report its wall time and peak RSS.

Each run gets a new interpreter (multiprocessing "spawn"), so the peak RSS is the
work process's own: imports plus whatever the function allocated, nothing
inherited from the benchmark driver.
"""

from __future__ import annotations

import importlib
import multiprocessing
import resource
import statistics
import time
from typing import Any


def _child(target: str, args: tuple, kwargs: dict, conn) -> None:
    """Import ``module:function``, call it once and send back time and peak RSS."""
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    started = time.perf_counter()
    extra = func(*args, **kwargs)
    seconds = time.perf_counter() - started
    if isinstance(extra, dict) and "seconds" in extra:
        # The function timed its own work (leaving out app start-up and set-up).
        seconds = extra.pop("seconds")
    conn.send({"seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "extra": extra})
    conn.close()


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: that keeps the pre-exec peak of the spawning parent."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_once(target: str, *args: Any, **kwargs: Any) -> dict:
    """Run ``target`` ("module:function") once in a new process; return its numbers."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(target, args, kwargs, child))
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError as exc:
        proc.join()
        raise RuntimeError(f"{target} died with exit code {proc.exitcode}") from exc
    proc.join()
    return result


def measure(target: str, *args: Any, repeat: int = 3, **kwargs: Any) -> dict:
    """Run ``target`` ``repeat`` times; return median/min/max seconds and peak RSS."""
    runs = [run_once(target, *args, **kwargs) for _ in range(repeat)]
    seconds = [r["seconds"] for r in runs]
    return {
        "seconds": statistics.median(seconds),
        "min": min(seconds),
        "max": max(seconds),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "runs": repeat,
        "extra": runs[-1]["extra"],
    }
