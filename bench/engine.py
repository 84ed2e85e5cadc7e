"""Engine overhead: a trivial job through Backhaul (row, claim, result) against bare RQ enqueues.

The issue's baseline is bare RQ enqueue + the same worker class, so the ratio is taken
against no-op jobs enqueued straight into RQ and run by Backhaul's worker (same
process size, same fork). A plain rq.Worker running the same no-ops is shown too:
it is the price of forking a small process instead of one holding the app and
every job module. Each worker is timed from the moment it registers with Redis to
its exit (burst mode), so start-up is left out on both sides.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from bench import env

PLAIN_WORKER = """
import bench.engine
from redis import Redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer
conn = Redis.from_url({url!r})
Worker([Queue("fast", connection=conn, serializer=JSONSerializer)], connection=conn,
       serializer=JSONSerializer).work(burst=True, logging_level="WARNING")
"""


def noop() -> None:
    """The bare RQ job."""


def _drain(proc: subprocess.Popen) -> float:
    """Time a just-started burst worker from its registration with Redis to its exit."""
    env.wait_for_workers(1, every=0.002, started=proc)
    started = time.perf_counter()
    proc.wait(600)
    return time.perf_counter() - started


def _backhaul_worker() -> subprocess.Popen:
    """Backhaul's worker on the fast queue, at normal CPU priority, leaving when the queue is empty."""
    return env.worker_process("fast", extra=("--no-nice",))


def _enqueue_noops(count: int) -> None:
    """``count`` no-op jobs straight into RQ's fast queue (JSON, like Backhaul's)."""
    from redis import Redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    queue = Queue("fast", connection=Redis.from_url(env.REDIS_URL), serializer=JSONSerializer)
    for _ in range(count):
        queue.enqueue("bench.engine.noop", result_ttl=600)


def bare_rq(count: int, worker_class: str) -> dict:
    """No-op jobs enqueued with RQ, drained by a plain rq.Worker or by Backhaul's worker."""
    _enqueue_noops(count)
    if worker_class == "plain":
        proc = subprocess.Popen([sys.executable, "-c", PLAIN_WORKER.format(url=env.REDIS_URL)], cwd=env.ROOT,
                                env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        proc = _backhaul_worker()
    return {"seconds": _drain(proc), "done": count}


def backhaul(count: int) -> dict:
    """Submit ``count`` self-test jobs (row + enqueue), then time Backhaul's worker draining them."""
    from sqlalchemy import func, select, text

    from webapp import queueing
    from webapp.extensions import db
    from webapp.models import Job

    application = env.app()
    owner = env.bench_user(application)
    with application.app_context():
        db.session.execute(text("DELETE FROM jobs WHERE kind = 'selftest'"))
        db.session.commit()
        started = time.perf_counter()
        for i in range(count):
            queueing.submit("selftest", owner, {}, f"bench {i}")
        submit_seconds = time.perf_counter() - started
    seconds = _drain(_backhaul_worker())
    with application.app_context():
        done = db.session.scalar(select(func.count()).select_from(Job).where(Job.kind == "selftest",
                                                                              Job.status == "succeeded"))
    return {"seconds": seconds, "done": done, "submit_rate": count / submit_seconds}


def _row(variant: str, size: str, seconds: list[float], count: int, note: str = "") -> dict:
    """A table row: the median of the runs, with min and max."""
    median = statistics.median(seconds)
    row = {"benchmark": "Engine overhead", "variant": variant, "size": size, "seconds": median,
           "runs": len(seconds), "rate": count / median, "note": note}
    if len(seconds) > 1:
        row.update(min=min(seconds), max=max(seconds))
    return row


def run(quick: bool = False) -> list[dict]:
    """All three, interleaved, several times, in the same run on the same Redis."""
    count, repeat = (50, 1) if quick else (500, 3)
    plain: list[float] = []
    bare: list[float] = []
    ours: list[float] = []
    submit_rates: list[float] = []
    for _ in range(repeat):
        plain.append(bare_rq(count, "plain")["seconds"])
        bare.append(bare_rq(count, "backhaul")["seconds"])
        result = backhaul(count)
        if result["done"] != count:
            raise RuntimeError(f"only {result['done']} of {count} self-tests succeeded")
        ours.append(result["seconds"])
        submit_rates.append(result["submit_rate"])
    ratio = statistics.median(ours) / statistics.median(bare)
    return [
        _row("bare RQ enqueue, plain rq.Worker (reference)", f"{count} no-op jobs", plain, count),
        _row("bare RQ enqueue, Backhaul's worker class (baseline)", f"{count} no-op jobs", bare, count),
        _row("backhaul (row, claim, result, events)", f"{count} trivial jobs", ours, count,
             f"{ratio:.2f}x the baseline's time; submit() {statistics.median(submit_rates):.0f}/s in-process"),
    ]
