"""Start a Backhaul worker: ``python worker.py [queue ...] [--burst] [--max-jobs N]``.

With no queue names it serves every queue in priority order (fast, default, cpu).
The app is built once, job modules are imported before forking (so each work
horse does not import them again), the process lowers its CPU priority so pages
stay fast while it works, and after --max-jobs jobs it re-executes itself to hand
any memory it grew back to the system.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import socket
import sys
import time
import uuid

from redis.exceptions import RedisError
from rq.serializers import JSONSerializer
from sqlalchemy import text

from jobs import runtime
from jobs.schedule_clock import ScheduleClockThread
from jobs.worker import BackhaulWorker, ReconcilerThread
from webapp import create_app, jobstate, redis_client
from webapp.extensions import db
from webapp.kinds import KINDS, QUEUES
from webapp.queueing import get_queue

log = logging.getLogger("backhaul.worker")


def lower_priority() -> str:
    """Make this process yield the CPU to the web process; returns what was done.

    ``nice`` alone only works against processes in the same session: the kernel's
    autogroup scheduler shares CPU between sessions first. A worker that leads its
    own session (a separate service, setsid) lowers its whole autogroup instead.
    """
    done = []
    try:
        os.nice(19 - os.nice(0))
        done.append("nice 19")
    except OSError as exc:
        done.append(f"nice failed: {exc}")
    if os.getsid(0) == os.getpid():
        try:
            with open("/proc/self/autogroup", "w") as autogroup:
                autogroup.write("19")
            done.append("autogroup nice 19")
        except OSError as exc:
            done.append(f"autogroup not changed: {exc}")
    return ", ".join(done)


def preload_job_modules() -> None:
    """Import every job module now, so forked work horses start warm."""
    for kind in KINDS.values():
        module_name = kind.func.rsplit(".", 1)[0]
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            log.warning("job module %s is not installed; %s jobs will fail", module_name, kind.name)


def warm_up_statements() -> None:
    """Run the job-lifecycle statements once against a row that does not exist.

    SQLAlchemy caches compiled statements per process: compiled here, before the first
    fork, they serve the main process's claims and results and are inherited by every
    work horse (progress, cancel checks) instead of being compiled per job.
    """
    ghost = uuid.uuid4()
    jobstate.start(ghost, "warm-up", "warm-up")
    jobstate.report_progress(ghost, 0, None)
    jobstate.cancel_requested(ghost)
    jobstate.heartbeat(ghost, "warm-up")
    jobstate.succeed(ghost, {}, "", rq_job_id="warm-up")
    db.session.rollback()


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queues", nargs="*", help=f"queues to serve, in priority order (default: {' '.join(QUEUES)})")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--max-jobs", type=int, default=None, help="recycle after this many jobs")
    parser.add_argument("--no-reconciler", action="store_true", help="do not run the reconciler thread")
    parser.add_argument("--no-clock", action="store_true", help="do not fire schedules from this worker")
    parser.add_argument("--no-nice", action="store_true", help="keep normal CPU priority")
    parser.add_argument("--name", default=None, help="worker name (default: host.pid.random)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the app and run one worker until stopped; restart it afresh when it must."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    app = create_app()
    queue_names = args.queues or list(QUEUES)
    unknown = [name for name in queue_names if name not in QUEUES]
    if unknown:
        print(f"unknown queue(s): {', '.join(unknown)}; choose from {', '.join(QUEUES)}", file=sys.stderr)
        return 2
    priority = "unchanged" if args.no_nice else lower_priority()
    preload_job_modules()
    try:
        if run_worker(app, args, queue_names, priority) == "stopped":
            return 0
    except RedisError as exc:
        log.warning("worker lost Redis (%s)", exc)
    # RQ's loop also ends when Redis goes away or after --max-jobs: either way, start
    # afresh (new memory, new connections) once Redis answers again.
    wait_for_redis(app.config["REDIS_URL"])
    log.info("worker restarting")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.argv])
    return 0


def run_worker(app, args: argparse.Namespace, queue_names: list[str], priority: str) -> str:
    """Run the RQ worker loop; "stopped" when asked to stop, "restart" when it should start afresh."""
    max_jobs = args.max_jobs if args.max_jobs is not None else app.config["WORKER_MAX_JOBS"]
    with app.app_context():
        # Connect once here: the engine's dialect set-up is then inherited by every work
        # horse instead of being repeated after each fork.
        db.session.execute(text("SELECT 1"))
        warm_up_statements()
        db.session.remove()
        runtime.remove_stale_results()
        # Everything loaded so far lives as long as the worker: keep it out of the
        # collector's reach so forked work horses do not copy those pages by touching them.
        gc.freeze()
        queues = [get_queue(name) for name in queue_names]
        # No socket timeout: the worker blocks on Redis for up to its dequeue timeout.
        connection = redis_client.connect(app.config["REDIS_URL"], timeout=None)
        name = args.name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        worker = BackhaulWorker(
            queues, connection=connection, serializer=JSONSerializer, name=name, app=app,
            shutdown_grace=app.config["SHUTDOWN_GRACE_SECONDS"],
            default_result_ttl=app.config["RESULT_TTL_SECONDS"],
            # The main process wakes this often while a horse works, and beats the row's heartbeat.
            job_monitoring_interval=max(1, round(app.config["JOB_HEARTBEAT_SECONDS"])),
        )
        log.info("worker %s serving %s (%s)", name, ", ".join(queue_names), priority)
        if not args.no_reconciler:
            ReconcilerThread(app, app.config["RECONCILE_SECONDS"]).start()
        if not (args.no_clock or args.burst):
            ScheduleClockThread(app).start()
        worker.work(burst=args.burst, max_jobs=max_jobs, with_scheduler=False,
                    logging_level=app.config.get("WORKER_LOG_LEVEL", "INFO"))
        if worker.shutdown_requested or args.burst:
            return "stopped"
        log.info("worker %s ending its loop after %s jobs", name, worker.successful_job_count + worker.failed_job_count)
        return "restart"


def wait_for_redis(url: str) -> None:
    """Block until Redis answers, trying every 0.5-2 s: a queue that is back should be served at once."""
    delay = 0.5
    while True:
        try:
            redis_client.connect(url).ping()
            return
        except RedisError as exc:
            log.warning("Redis unreachable (%s); retrying in %.0fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2)


if __name__ == "__main__":
    sys.exit(main())
