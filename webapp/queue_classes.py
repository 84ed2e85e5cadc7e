"""Classes of work (interactive, bulk, bulk CPU): which processes serve which queues, and how long work waits.

The process layout (``python worker.py --layout``, run by ``make run``, the Procfile and
docker-compose) starts ``WORKERS_<CLASS>`` processes of each class. Interactive
processes take only interactive queues, so they are free whenever someone submits an
export, a report or a photo; bulk processes take their own work first and help with the
rest when they have none. docs/production.md ("Process layout") explains the choice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from redis.exceptions import RedisError
from rq import Worker
from sqlalchemy import and_, func, or_, select

from webapp.extensions import db
from webapp.kinds import BULK_QUEUES, INTERACTIVE_QUEUES, KINDS
from webapp.models import Job, JobEvent
from webapp.models.job import utcnow

# The queue-depth rule, per class: over this many waiting, or the oldest waiting this long.
ADD_WORKERS_DEPTH = 100
WAITING_TOO_LONG_SECONDS = 300
# When a kind has no finished run in the last day, assume this long per job.
UNKNOWN_DURATION_SECONDS = 2.0
DURATION_CACHE_SECONDS = 30.0


@dataclass(frozen=True, kw_only=True)
class WorkerClass:
    """One class of work: its queues, the processes that serve it and the knob that counts them."""

    name: str
    label: str
    queues: tuple[str, ...]  # the queues holding this class's work, in priority order
    serves: tuple[str, ...]  # what its processes take, in priority order
    knob: str
    default_processes: int


CLASSES: tuple[WorkerClass, ...] = (
    WorkerClass(name="interactive", label="Interactive work", queues=INTERACTIVE_QUEUES, serves=INTERACTIVE_QUEUES,
                knob="WORKERS_INTERACTIVE", default_processes=1),
    WorkerClass(name="bulk", label="Bulk work", queues=("bulk",),
                serves=("bulk", "bulk_cpu", *INTERACTIVE_QUEUES), knob="WORKERS_BULK", default_processes=2),
    WorkerClass(name="bulk_cpu", label="Bulk CPU work", queues=("bulk_cpu",),
                serves=("bulk_cpu", "bulk", *INTERACTIVE_QUEUES), knob="WORKERS_BULK_CPU", default_processes=1),
)
BY_NAME = {worker_class.name: worker_class for worker_class in CLASSES}
_ALL_QUEUES = frozenset(INTERACTIVE_QUEUES + BULK_QUEUES)
assert sorted(q for c in CLASSES for q in c.queues) == sorted(INTERACTIVE_QUEUES + BULK_QUEUES)


def class_of_queue(queue: str) -> WorkerClass:
    """The class whose work ``queue`` holds."""
    return next(c for c in CLASSES if queue in c.queues)


def layout_counts(environ: Mapping[str, str] | None = None, overrides: Mapping[str, int] | None = None) -> dict[str, int]:
    """How many processes of each class the layout starts: WORKERS_<CLASS>, else the default.

    Raises ValueError for a knob that is not a whole number from 0 up.
    """
    environ = os.environ if environ is None else environ
    counts = {}
    for worker_class in CLASSES:
        raw = environ.get(worker_class.knob, "").strip()
        try:
            count = int(raw) if raw else worker_class.default_processes
        except ValueError:
            raise ValueError(f"{worker_class.knob} must be a whole number, not {raw!r}") from None
        if count < 0:
            raise ValueError(f"{worker_class.knob} must be 0 or more, not {count}")
        counts[worker_class.name] = count
    counts.update(overrides or {})
    if not any(counts.values()):
        raise ValueError("the layout starts no worker at all: set at least one WORKERS_* above 0")
    return counts


# -- how long work waits ---------------------------------------------------------------------------

_durations: tuple[float, dict[str, float]] = (0.0, {})


def typical_seconds() -> dict[str, float]:
    """Median run time of each kind over the last day (cached for half a minute per process)."""
    global _durations
    fetched, medians = _durations
    if time.monotonic() - fetched < DURATION_CACHE_SECONDS:
        return medians
    rows = db.session.execute(
        select(JobEvent.kind, func.percentile_cont(0.5).within_group(JobEvent.seconds))
        .where(JobEvent.at >= utcnow() - timedelta(hours=24), JobEvent.event == "succeeded",
               JobEvent.seconds.is_not(None))
        .group_by(JobEvent.kind)
    ).all()
    medians = {kind: float(seconds) for kind, seconds in rows}
    _durations = (time.monotonic(), medians)
    return medians


def worker_queues(connection) -> list[tuple[str, ...]] | None:
    """The queues of each live RQ worker, in its priority order; None when Redis is unreachable."""
    try:
        return [tuple(worker.queue_names()) for worker in Worker.all(connection=connection)]
    except RedisError:
        return None


def _serving(workers: list[tuple[str, ...]], worker_class: WorkerClass) -> tuple[int, int]:
    """(processes that take this class's work at all, those that take it first)."""
    anyhow = sum(1 for queues in workers if set(queues) & set(worker_class.queues))
    first = sum(1 for queues in workers if queues and queues[0] in worker_class.queues)
    return anyhow, first


def _plural(label: str, count: int) -> str:
    """"3 orders exports", "1 photo", "2 newsletter batches"."""
    noun = label.lower()
    if count != 1:
        noun += "es" if noun.endswith(("ch", "sh", "s", "x")) else "s"
    return f"{count} {noun}"


def _label(kind: str) -> str:
    """The kind's label, or its name for a kind this version does not know."""
    return KINDS[kind].label if kind in KINDS else kind


@dataclass(frozen=True)
class Waiting:
    """What a queued job waits for, in words a user reads on its page."""

    text: str
    ahead: int
    seconds: float | None


def waiting_text(job: Job) -> Waiting | None:
    """waiting_for with the app's Redis connection (the job page's partial calls this)."""
    from webapp.queueing import redis_conn

    return waiting_for(job, redis_conn())


def waiting_for(job: Job, connection) -> Waiting | None:
    """What ``job`` (queued) waits behind, and roughly when it starts; None for a job that is not queued.

    Ahead of it: queued jobs a worker serving its queue takes first (higher-priority queues of
    its class, earlier jobs on its own queue) and the jobs those workers are running now.
    """
    if job.status != "queued" or job.next_retry_at is not None or job.queue not in _ALL_QUEUES:
        return None
    if job.depends_on_id is not None:
        dependency = db.session.execute(select(Job.status, Job.kind).where(Job.id == job.depends_on_id)).first()
        if dependency is not None and dependency.status in ("queued", "running"):
            # RQ holds it back until the other job succeeds: its place in the queue means nothing yet.
            return Waiting(f"Starts when the {_label(dependency.kind).lower()} it belongs to has finished.", 0, None)
    worker_class = class_of_queue(job.queue)
    before = worker_class.queues[:worker_class.queues.index(job.queue)]
    mine = job.enqueued_at or job.created_at
    ahead_rows = db.session.execute(
        select(Job.kind, func.count()).where(
            Job.status == "queued", Job.id != job.id, Job.next_retry_at.is_(None),
            or_(Job.queue.in_(before), and_(Job.queue == job.queue, func.coalesce(Job.enqueued_at, Job.created_at) < mine)),
        ).group_by(Job.kind)
    ).all()
    running = db.session.execute(
        select(Job.kind, Job.started_at).where(Job.status == "running", Job.queue.in_(worker_class.queues))
    ).all()
    ahead = sum(n for _, n in ahead_rows)
    workers = worker_queues(connection)
    anyhow, first = _serving(workers, worker_class) if workers is not None else (1, 1)
    if not anyhow:
        return Waiting(f"No worker is taking {worker_class.label.lower()} right now; it starts as soon as one does "
                       f"(operators: {worker_class.knob}).", ahead, None)
    medians = typical_seconds()
    now = utcnow()
    queued_seconds = sum(n * medians.get(kind, UNKNOWN_DURATION_SECONDS) for kind, n in ahead_rows)
    running_left = sum(max(0.0, medians.get(kind, UNKNOWN_DURATION_SECONDS)
                           - ((now - started).total_seconds() if started else 0.0)) for kind, started in running)
    # Processes of other classes help only when their own work is done: count on this class's own.
    processes = max(1, first)
    busy = len(running)
    if not ahead and busy < processes:
        return Waiting("Starting in a moment.", 0, 0.0)
    seconds = (queued_seconds + running_left) / processes
    parts = [_plural(_label(kind), n) for kind, n in sorted(ahead_rows, key=lambda r: -r[1])]
    behind = ", ".join(parts[:3]) + (" and more" if len(parts) > 3 else "")
    text = f"Waiting behind {behind}" if ahead else f"Waiting for {_plural('running job', busy)} to finish"
    return Waiting(f"{text}; starts in about {describe_wait(seconds)}.", ahead, seconds)


def describe_wait(seconds: float) -> str:
    """A wait as people say it: "5 s", "about a minute" style, rounded to what an estimate deserves."""
    if seconds < 10:
        return f"{max(1, round(seconds))} s"
    if seconds < 90:
        return f"{round(seconds / 5) * 5} s"
    return f"{round(seconds / 60)} min"


# -- the operations view -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassBacklog:
    """One class of work on the operations page."""

    worker_class: WorkerClass
    waiting: int
    running: int
    oldest_seconds: float
    workers: int | None  # processes taking this class's work; None when Redis is unreachable
    expected_wait: float | None  # for a job submitted now
    hint: str | None


def class_backlogs(connection) -> list[ClassBacklog]:
    """Each class's backlog, oldest wait, serving processes, expected wait and scaling hint."""
    now = utcnow()
    rows = db.session.execute(
        select(Job.queue, Job.status, Job.kind, func.count(), func.min(Job.updated_at))
        .where(Job.status.in_(["queued", "running"])).group_by(Job.queue, Job.status, Job.kind)
    ).all()
    workers = worker_queues(connection)
    medians = typical_seconds()
    result = []
    for worker_class in CLASSES:
        mine = [r for r in rows if r[0] in worker_class.queues]
        waiting = sum(n for _q, status, _k, n, _o in mine if status == "queued")
        running = sum(n for _q, status, _k, n, _o in mine if status == "running")
        oldest = max([(now - o).total_seconds() for _q, status, _k, _n, o in mine if status == "queued"] or [0.0])
        work = sum(n * medians.get(k, UNKNOWN_DURATION_SECONDS) for _q, _s, k, n, _o in mine)
        serving = None if workers is None else _serving(workers, worker_class)[0]
        first = 0 if workers is None else _serving(workers, worker_class)[1]
        expected = None if not serving else work / max(1, first)
        result.append(ClassBacklog(worker_class, waiting, running, oldest, serving, expected,
                                   _hint(worker_class, waiting, oldest, serving)))
    return result


def _hint(worker_class: WorkerClass, waiting: int, oldest: float, serving: int | None) -> str | None:
    """The queue-depth rule in words for one class, or None when it is healthy."""
    name = worker_class.label.lower()
    if serving == 0 and waiting:
        return f"{waiting} {name} jobs wait and no process takes them: start one ({worker_class.knob})."
    if waiting > ADD_WORKERS_DEPTH or oldest > WAITING_TOO_LONG_SECONDS:
        return (f"{worker_class.label}: {waiting} waiting, the oldest for {oldest / 60:.0f} min: add a "
                f"{worker_class.name.replace('_', ' ')} worker ({worker_class.knob}; rule: over {ADD_WORKERS_DEPTH} "
                f"waiting or waiting over {WAITING_TOO_LONG_SECONDS // 60} min).")
    return None



def current_backlogs() -> list[ClassBacklog]:
    """class_backlogs with the app's Redis connection (the operations partial calls this)."""
    from webapp.queueing import redis_conn

    return class_backlogs(redis_conn())


def init_app(app) -> None:
    """Make the waiting text and the class backlogs callable from templates."""
    app.jinja_env.globals.update(waiting_text=waiting_text, class_backlogs=current_backlogs)
