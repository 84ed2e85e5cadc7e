"""Engine overhead: a trivial job through Backhaul (row, claim, heartbeat, result) against bare RQ."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench import env

BARE_WORKER = """
import bench.engine
from redis import Redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer
conn = Redis.from_url({url!r})
Worker([Queue("bare", connection=conn, serializer=JSONSerializer)], connection=conn,
       serializer=JSONSerializer).work(burst=True, logging_level="WARNING")
"""


def noop() -> None:
    """The bare RQ job."""


def backhaul(count: int) -> dict:
    """Submit ``count`` self-test jobs, then time one forking worker draining them."""
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
    started = time.perf_counter()
    env.worker_process("fast", extra=("--no-nice",)).wait(600)
    seconds = time.perf_counter() - started
    with application.app_context():
        done = db.session.scalar(select(func.count()).select_from(Job).where(Job.kind == "selftest",
                                                                              Job.status == "succeeded"))
    return {"seconds": seconds, "done": done, "submit_rate": count / submit_seconds}


def bare_rq(count: int) -> dict:
    """Enqueue ``count`` no-op jobs and time a plain rq.Worker (forking, JSON) draining them."""
    from redis import Redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    queue = Queue("bare", connection=Redis.from_url(env.REDIS_URL), serializer=JSONSerializer)
    for _ in range(count):
        queue.enqueue("bench.engine.noop", result_ttl=600)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE_WORKER.format(url=env.REDIS_URL)], cwd=env.ROOT,
                   env=os.environ.copy(), check=True, capture_output=True)
    return {"seconds": time.perf_counter() - started, "done": count}


def run(quick: bool = False) -> list[dict]:
    """Both, in the same run, on the same Redis."""
    count = 50 if quick else 500
    bare = bare_rq(count)
    ours = backhaul(count)
    return [
        {"benchmark": "Engine overhead", "variant": "bare RQ (forking worker, JSON)", "size": f"{count} no-op jobs",
         "seconds": bare["seconds"], "runs": 1, "rate": bare["done"] / bare["seconds"]},
        {"benchmark": "Engine overhead", "variant": "backhaul (row, claim, heartbeat, result)",
         "size": f"{count} trivial jobs", "seconds": ours["seconds"], "runs": 1,
         "rate": ours["done"] / ours["seconds"],
         "note": f"{ours['seconds'] / bare['seconds']:.2f}x bare RQ; submit() {ours['submit_rate']:.0f}/s in-process"},
    ]
