"""The benchmarks' own environment: database backhaul_bench, Redis DB 12, a temporary storage folder.

Never the data `make run` uses (backhaul, Redis DB 0) nor the tests' (backhaul_test, DB 13).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BACKHAUL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB_NAME = os.environ.get("BACKHAUL_BENCH_DB", "backhaul_bench")
REDIS_URL = os.environ.get("BACKHAUL_BENCH_REDIS", "redis://127.0.0.1:6379/12")
# The lunch rush's report: the last half year of orders (about 1,100 pages on the full data set).
LUNCH_REPORT_DAYS = 180


def prepare(fresh: bool = True) -> dict[str, str]:
    """Create the benchmark database (fresh), migrate it, empty Redis DB 12; export the settings."""
    scratch = Path(tempfile.mkdtemp(prefix="backhaul-bench-"))
    env = {
        "BACKHAUL_ENV": "test",
        "SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": f"{PG}/{DB_NAME}",
        "REDIS_URL": REDIS_URL,
        "STORAGE_DIR": str(scratch / "storage"),
        "SCRATCH_DIR": str(scratch / "scratch"),
        "PYTHONPATH": str(ROOT),
        "WORKER_MAX_JOBS": "100000",
        "LOG_FORMAT": "text",
    }
    os.environ.update(env)
    if fresh:
        from scripts.bootstrap import recreate_database

        recreate_database(PG, DB_NAME, str(ROOT))
    Redis.from_url(REDIS_URL).flushdb()
    return env


def app():
    """The app with the benchmark settings (logging quiet)."""
    import logging

    from webapp import create_app

    application = create_app()
    for name in ("backhaul", "webapp", "jobs"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return application


def bench_user(application) -> int:
    """The id of the benchmark account (created once)."""
    from webapp.extensions import db
    from webapp.models import User

    with application.app_context():
        user = db.session.scalar(db.select(User).where(User.email == "bench@example.com"))
        if user is None:
            user = User(email="bench@example.com", is_admin=True)
            user.set_password("bench-password")
            db.session.add(user)
            db.session.commit()
        return user.id


def reset_orders(application, count: int) -> None:
    """Replace the orders with ``count`` generated ones."""
    from sqlalchemy import text

    from webapp.demo_data import seed_demo_data
    from webapp.extensions import db

    with application.app_context():
        db.session.execute(text("TRUNCATE orders, customers RESTART IDENTITY CASCADE"))
        db.session.commit()
        seed_demo_data(orders=count, subscribers=0, customers=min(5000, max(1, count // 20)), days=365)


def worker_process(*queues: str, burst: bool = True, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start a real Backhaul worker."""
    args = [sys.executable, str(ROOT / "worker.py"), *queues, "--no-reconciler", *extra]
    if burst:
        args.append("--burst")
    return subprocess.Popen(args, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_for_workers(count: int, timeout: float = 60.0, *, every: float = 0.05,
                     started: subprocess.Popen | None = None) -> None:
    """Wait until ``count`` workers have registered with Redis (they are ready to take jobs).

    With ``started``, also stop waiting if that process has already exited (a burst
    worker with little to do may come and go between two looks).
    """
    from rq import Worker

    redis = Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + timeout
    while Worker.count(connection=redis) < count:
        if started is not None and started.poll() is not None:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} worker(s) did not start within {timeout:.0f} s")
        time.sleep(every)
