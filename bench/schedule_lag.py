"""Schedule firing lag over real minute slots, and RQ's own cron for comparison.

``python -m bench.schedule_lag [--slots 10] [--workers 3]`` (takes about ``slots`` minutes).

Backhaul: ``--workers`` real workers (each with its schedule clock) and a minutely self-test
schedule; for each slot it reports how long after the slot the job row was created and
the job started, and checks that each slot became exactly one job.
RQ 2.12's cron: two ``CronScheduler`` processes (as a deploy with two dynos, or an old and a
new release overlapping, would run) with the same minutely job; it counts what each slot
enqueued. Not part of ``make bench``: it waits for real minutes.
Uses its own database (BACKHAUL_SCHEDULE_BENCH_DB, default backhaul_schedule_bench) and
Redis (BACKHAUL_BENCH_REDIS, default DB 12).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BACKHAUL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB_NAME = os.environ.get("BACKHAUL_SCHEDULE_BENCH_DB", "backhaul_schedule_bench")
REDIS_URL = os.environ.get("BACKHAUL_BENCH_REDIS", "redis://127.0.0.1:6379/12")
RQ_CRON_QUEUE = "rq_cron_probe"


def probe() -> None:
    """The job RQ's cron enqueues (never run: only counted)."""


def rq_cron_process() -> None:
    """One RQ CronScheduler with a minutely job (run as a subprocess: it installs signal handlers)."""
    from rq.cron import CronScheduler

    from bench.schedule_lag import probe as job

    scheduler = CronScheduler(Redis.from_url(REDIS_URL), logging_level="WARNING")
    scheduler.register(job, RQ_CRON_QUEUE, cron="* * * * *")
    scheduler.start()


def main() -> None:
    """Start the workers and the RQ cron processes, wait for the slots, print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="backhaul-schedule-bench-"))
    os.environ.update({"BACKHAUL_ENV": "test", "SECRET_KEY": secrets.token_hex(32), "DATABASE_URL": f"{PG}/{DB_NAME}", "REDIS_URL": REDIS_URL,
                       "STORAGE_DIR": str(scratch / "storage"), "SCRATCH_DIR": str(scratch / "scratch"),
                       "PYTHONPATH": str(ROOT), "LOG_FORMAT": "text"})
    from scripts.bootstrap import recreate_database

    recreate_database(PG, DB_NAME, str(ROOT))
    Redis.from_url(REDIS_URL).flushdb()

    from webapp import create_app, scheduling
    from webapp.extensions import db
    from webapp.models import Job, ScheduleRun, User

    app = create_app()
    with app.app_context():
        user = User(email="bench@example.com", is_admin=True)
        user.set_password("bench-password")
        db.session.add(user)
        db.session.commit()
        schedule = scheduling.create_schedule("selftest", user.id, {}, "* * * * *", "UTC")
        schedule_id, first_slot = schedule.id, schedule.next_run_at
    log = open(scratch / "processes.log", "wb")  # noqa: SIM115 - for the life of the run
    procs = [subprocess.Popen([sys.executable, str(ROOT / "worker.py"), "--no-nice"], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT) for _ in range(args.workers)]
    procs += [subprocess.Popen([sys.executable, "-c", "from bench.schedule_lag import rq_cron_process as p; p()"],
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT) for _ in range(2)]
    try:
        last_slot = first_slot.timestamp() + 60 * (args.slots - 1)
        while time.time() < last_slot + 15:
            time.sleep(1)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    with app.app_context():
        rows = db.session.execute(
            db.select(ScheduleRun.slot_at, ScheduleRun.fired_at, Job.created_at, Job.started_at, Job.status)
            .join(Job, Job.id == ScheduleRun.job_id).where(ScheduleRun.schedule_id == schedule_id)
            .order_by(ScheduleRun.slot_at)
        ).all()
        jobs = db.session.scalar(db.select(db.func.count()).select_from(Job))
    created = [(r.created_at - r.slot_at).total_seconds() for r in rows]
    started = [(r.started_at - r.slot_at).total_seconds() for r in rows if r.started_at]
    rq_enqueued = Redis.from_url(REDIS_URL).llen(f"rq:queue:{RQ_CRON_QUEUE}")
    result = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "workers": args.workers, "slots": len(rows),
        "jobs": jobs, "distinct_slots": len({r.slot_at for r in rows}),
        "created_lag_s": {"median": statistics.median(created), "max": max(created)} if created else None,
        "started_lag_s": {"median": statistics.median(started), "max": max(started)} if started else None,
        "rq_cron_two_schedulers_enqueued": rq_enqueued,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
