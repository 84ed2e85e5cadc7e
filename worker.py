"""Start a Backhaul worker: ``python worker.py [queue ...] [--class NAME] [--layout] [--burst] [--max-jobs N]``.

With no queue names it serves every queue in priority order (fast, default, cpu, bulk,
bulk_cpu). ``--class interactive|bulk|bulk_cpu`` serves what a process of that class of
work serves (webapp/queue_classes.py). ``--layout`` starts the whole process layout
(WORKERS_INTERACTIVE, WORKERS_BULK, WORKERS_BULK_CPU processes) and keeps it running:
it is what ``make run``, the Procfile and docker-compose start.

The app is built once, job modules are imported before forking (so each work
horse does not import them again), the process lowers its CPU priority so pages
stay fast while it works, and after --max-jobs jobs it re-executes itself to hand
any memory it grew back to the system.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import importlib
import logging
import os
import signal
import socket
import subprocess
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
from webapp.queue_classes import BY_NAME as CLASSES
from webapp.queue_classes import layout_counts
from webapp.queueing import get_queue

log = logging.getLogger("backhaul.worker")


def lower_priority(launcher_session: bool = False) -> str:
    """Make this process yield the CPU to the web process; returns what was done.

    ``nice`` alone only works against processes in the same session: the kernel's
    autogroup scheduler shares CPU between sessions first. A worker that leads its
    own session (a separate service, setsid) lowers its whole autogroup instead.
    With ``launcher_session`` (the layout), so does one whose parent leads the session:
    honcho and Procfile runners start each line as ``sh -c ...`` in a session of its own.
    """
    done = []
    try:
        os.nice(19 - os.nice(0))
        done.append("nice 19")
    except OSError as exc:
        done.append(f"nice failed: {exc}")
    if os.getsid(0) == os.getpid() or (launcher_session and os.getsid(0) == os.getppid()):
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
    parser.add_argument("--class", dest="worker_class", choices=sorted(CLASSES),
                        help="serve what a process of this class of work serves")
    parser.add_argument("--layout", action="store_true",
                        help="start WORKERS_INTERACTIVE, WORKERS_BULK and WORKERS_BULK_CPU processes and keep them up")
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
    if args.layout:
        if args.queues or args.worker_class or args.burst or args.name:
            print("--layout starts whole classes of workers: no queues, --class, --burst or --name", file=sys.stderr)
            return 2
        return run_layout(args)
    app = create_app()
    if args.worker_class and args.queues:
        print("give queue names or --class, not both", file=sys.stderr)
        return 2
    queue_names = list(CLASSES[args.worker_class].serves) if args.worker_class else args.queues or list(QUEUES)
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


def _child_setup(layout_pid: int) -> None:
    """In a layout's worker process before it runs: its own process group, and stop when the layout dies.

    Its own group, so a Ctrl-C or a supervisor's group signal reaches it once, through the
    layout (a second SIGTERM would make RQ kill running work at once). PR_SET_PDEATHSIG, so a
    SIGKILLed layout process leaves no orphan worker behind to run beside its replacement.
    """
    os.setpgid(0, 0)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != layout_pid:  # the layout died before prctl took effect
        os._exit(0)


def run_layout(args: argparse.Namespace) -> int:
    """Start the process layout and keep it up until SIGTERM/SIGINT; restart any process that ends.

    Each process is a plain ``python worker.py --class NAME``: the layout only counts,
    starts, restarts and stops them, so a worker behaves the same however it was started.
    """
    try:
        counts = layout_counts()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    passed = [flag for flag, on in (("--no-nice", args.no_nice), ("--no-reconciler", args.no_reconciler)) if on]
    if args.max_jobs is not None:
        passed += ["--max-jobs", str(args.max_jobs)]
    slots = [name for name, count in counts.items() for _ in range(count)]
    procs: list[subprocess.Popen | None] = [None] * len(slots)
    started_at = [0.0] * len(slots)
    restart_at: list[float | None] = [0.0] * len(slots)
    failures = [0] * len(slots)
    stopping = False

    def stop(signum, _frame) -> None:
        nonlocal stopping
        if not stopping:
            log.info("layout stopping (%s)", signal.Signals(signum).name)
        stopping = True
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Before the processes start: they inherit the lower priority (and the autogroup's).
    priority = "unchanged" if args.no_nice else lower_priority(launcher_session=True)
    log.info("layout: %s (%s)", ", ".join(f"{n} {name}" for name, n in counts.items()), priority)
    script = os.path.abspath(__file__)
    while True:
        now = time.monotonic()
        for i, name in enumerate(slots):
            proc = procs[i]
            if proc is not None and restart_at[i] is None and proc.poll() is not None:
                # Whatever it left in its process group (RQ's scheduler) goes with it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                # A process that keeps ending soon after starting backs off, so a broken set-up does not spin.
                failures[i] = failures[i] + 1 if now - started_at[i] < 10 else 0
                restart_at[i] = now + (min(30, 2 ** failures[i]) if failures[i] else 0)
                if not stopping:
                    log.warning("%s worker ended (exit %s); starting another", name, proc.returncode)
            due = restart_at[i]
            if stopping or due is None or now < due:
                continue
            procs[i] = subprocess.Popen([sys.executable, script, "--class", name, *passed],
                                        preexec_fn=functools.partial(_child_setup, os.getpid()))  # noqa: PLW1509 - the layout has no threads
            started_at[i], restart_at[i] = now, None
        if stopping and all(proc is None or proc.poll() is not None for proc in procs):
            for proc in filter(None, procs):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # anything a worker left behind
            return 0
        time.sleep(0.2)


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
