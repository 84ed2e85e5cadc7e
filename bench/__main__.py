"""Run every benchmark: ``python -m bench [--quick] [--only NAME ...]``.

Prints one table, writes raw JSON to bench/results/ and (full runs only) the table
to docs/BENCHMARKS.md. Quick mode runs the same code at tiny sizes, as part of
``make test``, so the benchmarks never rot; it fails only if a benchmark crashes, not when
the machine is too busy to measure (a row then says "could not measure").
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import CannotMeasure, env

BENCHMARKS = ("export", "photos", "reports", "newsletter", "engine", "lunch_rush", "interactive")
# Which table rows each benchmark module writes (by the start of the row's "benchmark").
ROW_PREFIXES = {"export": ("CSV export",), "photos": ("Photo resize",), "reports": ("PDF report",),
                "newsletter": ("Newsletter",), "engine": ("Engine overhead",),
                "lunch_rush": ("Lunch rush", "Saturation"), "interactive": ("Interactive latency",)}
RESULTS = env.ROOT / "bench" / "results"
DOC = env.ROOT / "docs" / "BENCHMARKS.md"


def machine() -> dict:
    """What this ran on."""
    import fpdf
    import PIL
    import rq

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split(" ")[2:3]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "postgresql": pg, "redis": "".join(redis),
            "pillow": PIL.__version__, "fpdf2": fpdf.FPDF_VERSION, "rq": rq.__version__}


def fmt(value, digits: int = 2) -> str:
    """A number for the table, or a dash."""
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(rows: list[dict]) -> str:
    """The results as a Markdown table."""
    lines = ["| benchmark | variant | size | median s | min–max s | peak RSS MB | rate /s | p50 ms | p99 ms | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        span = f"{fmt(r.get('min'))}–{fmt(r.get('max'))}" if r.get("min") is not None else "–"
        note = r.get("note", "") + (f"; {r['pages']} pages" if r.get("pages") else "")
        lines.append(f"| {r['benchmark']} | {r['variant']} | {r.get('size', '')} | {fmt(r.get('seconds'))} | {span} | "
                     f"{fmt(r.get('peak_rss_mb'), 0)} | {fmt(r.get('rate'), 0)} | {fmt(r.get('p50_ms'), 1)} | "
                     f"{fmt(r.get('p99_ms'), 1)} | {note.strip('; ')} |")
    return "\n".join(lines)


def _merge_into_last_full(rows: list[dict], names: list[str], exclude: str) -> list[dict]:
    """The newest complete run's rows, with those of ``names`` replaced by ``rows``."""
    complete = [p for p in sorted(RESULTS.glob("2*.json")) if p.name != exclude
                and not json.loads(p.read_text()).get("partial")]
    if not complete:
        return rows
    previous = json.loads(complete[-1].read_text())["rows"]
    prefixes = tuple(prefix for name in names for prefix in ROW_PREFIXES[name])
    kept = [r for r in previous if not r["benchmark"].startswith(prefixes)]
    return kept + rows


def main() -> int:
    """Run, print, save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run each (used by make test)")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args()
    env.prepare()
    rows: list[dict] = []
    crashed = []
    for name in args.only or BENCHMARKS:
        started = time.perf_counter()
        try:
            result = importlib.import_module(f"bench.{name}").run(quick=args.quick)
        except CannotMeasure as exc:
            print(f"bench {name}: could not measure: {exc}", file=sys.stderr)
            rows.append({"benchmark": name, "variant": "could not measure", "note": str(exc)})
            if not args.quick:
                crashed.append(name)  # a full run must not publish a table with a hole
            continue
        except Exception:  # noqa: BLE001 - report which benchmark broke, run the rest
            traceback.print_exc()
            crashed.append(name)
            continue
        for row in result:
            row.pop("extra", None)
        rows += result
        print(f"bench {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    info = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick, "machine": machine(),
            "partial": bool(args.only)}
    output = table(rows)
    print(output)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "quick.json" if args.quick else f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    (RESULTS / name).write_text(json.dumps({**info, "rows": rows}, indent=2, default=str))
    if not args.quick and args.only:
        # A partial full-size run refreshes its rows in the last complete table.
        rows = _merge_into_last_full(rows, args.only, exclude=name)
        output = table(rows)
    if not args.quick:
        m = info["machine"]
        DOC.write_text(
            "# Benchmarks\n\nProduced by `make bench` (`python -m bench`); raw numbers in `bench/results/`.\n\n"
            f"- date: {info['date']}\n- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB\n"
            f"- versions: Python {m['python']}, {m['postgresql']}, Redis {m['redis']}, Pillow {m['pillow']}, "
            f"fpdf2 {m['fpdf2']}, rq {m['rq']}\n\nEach row is the median of its runs (min–max beside it); peak RSS "
            "is the work process's own (a fresh process per run). Every baseline ran in the same run as ours. "
            "The interactive-latency rows run the processes `make run` starts (Procfile.dev's worker line) at "
            "normal CPU priority, against the old single worker; their notes give the machine's load average, "
            "as the machine these ran on is shared.\n\n"
            + output + "\n")
    if crashed:
        print(f"benchmarks that crashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
