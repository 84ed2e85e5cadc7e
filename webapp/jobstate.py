"""Every change of a job's status happens here, and only here.

Each move is one conditional UPDATE (``WHERE status IN (...)``), so two processes
racing for the same row cannot both win: a duplicate RQ delivery, a reconciler and
a user's click all go through the same gate. Each move also writes a JobEvent row
and one log line.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, insert, literal, or_, select, update

from webapp.extensions import db
from webapp.kinds import get_kind
from webapp.models.job import Job, JobEvent, JobStatus, utcnow

log = logging.getLogger("backhaul.jobs")

Q, R, S, F, C = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)

# The only moves there are. RUNNING -> QUEUED is a retry after an interruption or
# a transient error; FAILED/CANCELLED -> QUEUED is a retry asked for by a person.
ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    Q: frozenset({R, C}),
    R: frozenset({S, F, C, Q}),
    F: frozenset({Q}),
    C: frozenset({Q}),
    S: frozenset(),
}


class TransitionError(RuntimeError):
    """A move that the state machine does not allow."""


def _sources(target: JobStatus, among: Iterable[JobStatus]) -> list[str]:
    """The statuses in ``among`` from which ``target`` may be reached."""
    sources = [s.value for s in among if target in ALLOWED[s]]
    if not sources:
        raise TransitionError(f"no allowed move to {target.value} from {[s.value for s in among]}")
    return sources


def record(job: Job, event: str, detail: str = "", seconds: float | None = None) -> None:
    """Insert a JobEvent for ``job`` in the current transaction and write the matching log line."""
    # A plain INSERT rather than an object for the unit of work: two of these run on every job's path.
    db.session.execute(insert(JobEvent).values(
        job_id=job.id, kind=job.kind, event=event, attempt=job.attempts, seconds=seconds, detail=detail[:500],
    ))
    _log_event(job, event, detail, seconds)


def _log_event(job: Job, event: str, detail: str, seconds: float | None = None) -> None:
    """The log line that goes with every JobEvent."""
    log.info(
        "job %s %s%s",
        event,
        job.kind,
        f": {detail}" if detail else "",
        extra={
            "job_id": str(job.id),
            "kind": job.kind,
            "queue": job.queue,
            "attempt": job.attempts,
            "event": event,
            "seconds": seconds,
        },
    )


def _move(job_id: uuid.UUID, target: JobStatus, among: Iterable[JobStatus], *extra_where, **values: Any) -> Job | None:
    """Move ``job_id`` to ``target`` if it is in one of ``among``; return the row or None."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(_sources(target, among)), *extra_where)
        .values(status=target.value, updated_at=utcnow(), **values)
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    job = db.session.scalars(stmt).one_or_none()
    if job is None:
        db.session.rollback()
    return job


@functools.cache
def _submit_statement():
    """INSERT a job row and, from what it returns, its "submitted" event: built once, reused by every submit."""
    jobs, events = Job.__table__, JobEvent.__table__
    row = (insert(jobs).values({column.key: bindparam(column.key, type_=column.type) for column in jobs.columns})
           .returning(jobs.c.id, jobs.c.kind, jobs.c.attempts, jobs.c.created_at).cte("submitted_job"))
    return insert(events).from_select(
        ["job_id", "kind", "event", "attempt", "detail", "at"],
        select(row.c.id, row.c.kind, literal("submitted"), row.c.attempts, bindparam("detail", type_=events.c.detail.type),
               row.c.created_at),
    )


def create(
    kind: str,
    owner_id: int,
    params: dict[str, Any],
    title: str,
    *,
    depends_on: Job | None = None,
    parent: Job | None = None,
    queue: str | None = None,
) -> Job:
    """Insert a queued job row for ``kind`` and its "submitted" event (the caller commits).

    ``queue`` overrides the kind's queue for this job (see kinds.queue_for).

    One statement writes both (the job's INSERT feeds the event's through a CTE): this
    runs in every submit request. The returned Job is never added to the session: it
    carries every column as written, for the caller to read.
    """
    policy = get_kind(kind)
    job_id = uuid.uuid4()
    now = utcnow()
    values: dict[str, Any] = {
        "id": job_id, "kind": kind, "owner_id": owner_id, "status": Q.value, "queue": queue or policy.queue,
        "title": title[:200], "params": params, "result": None, "message": "Queued", "error": None,
        "progress_done": 0, "progress_total": None, "attempts": 0, "max_attempts": policy.max_attempts,
        # The first delivery's RQ id is set with the row, so submitting costs one transaction.
        "rq_job_id": f"{job_id}_1", "runs": 1,
        "depends_on_id": depends_on.id if depends_on else None, "parent_id": parent.id if parent else None,
        "cancel_requested": False, "worker_name": None, "created_at": now, "updated_at": now, "enqueued_at": now,
        "started_at": None, "finished_at": None, "heartbeat_at": None, "next_retry_at": None, "announced_at": None,
    }
    db.session.execute(_submit_statement(), {**values, "detail": title[:500]})
    job = Job(**values)
    _log_event(job, "submitted", title)
    return job


def start(job_id: uuid.UUID, rq_job_id: str, worker_name: str) -> Job | None:
    """Claim a queued job for this RQ delivery; None when it is not ours to run.

    The ``rq_job_id`` condition drops stale deliveries: a copy left in Redis after
    the reconciler re-enqueued the row under a new id never runs. The row comes back
    detached with every column loaded, so reading it costs no further query (the
    worker claims in its main process and the forked work process inherits it).
    """
    now = utcnow()
    job = _move(
        job_id,
        R,
        [Q],
        Job.rq_job_id == rq_job_id,
        Job.cancel_requested.is_(False),
        attempts=Job.attempts + 1,
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        next_retry_at=None,
        worker_name=worker_name[:200],
        message="Starting",
        error=None,
    )
    if job is not None:
        record(job, "started", f"attempt {job.attempts} of {job.max_attempts} on {worker_name}")
        db.session.expunge(job)
        db.session.commit()
    return job


def report_progress(job_id: uuid.UUID, done: int, total: int | None, message: str | None = None) -> None:
    """Write progress (not a status change) and refresh the heartbeat."""
    values: dict[str, Any] = {"progress_done": done, "progress_total": total, "heartbeat_at": utcnow()}
    if message is not None:
        values["message"] = message[:500]
    db.session.execute(
        update(Job).where(Job.id == job_id, Job.status == R.value).values(**values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def succeed(job_id: uuid.UUID, result: dict[str, Any], message: str, *, rq_job_id: str | None = None) -> Job | None:
    """Running -> succeeded with its result (only if ``rq_job_id``, when given, is the delivery that ran)."""
    delivery = [Job.rq_job_id == rq_job_id] if rq_job_id is not None else []
    job = _move(job_id, S, [R], *delivery, result=result, message=message[:500], finished_at=utcnow(), error=None)
    if job is not None:
        job.progress_done = job.progress_total or job.progress_done
        record(job, "succeeded", message, seconds=job.duration_seconds)
        db.session.commit()
    return job


def fail(job_id: uuid.UUID, error: str) -> Job | None:
    """Running (or a queued one that cannot run) -> failed with a user-facing message."""
    job = _move(job_id, F, [R], error=error[:2000], message="Failed", finished_at=utcnow())
    if job is not None:
        record(job, "failed", error, seconds=job.duration_seconds)
        cancel_dependents(job, "skipped: the job it depends on failed")
        db.session.commit()
    return job


def retry_later(job_id: uuid.UUID, reason: str, delay_seconds: float) -> Job | None:
    """Running -> queued for another attempt after ``delay_seconds`` (the reconciler hands it over when due)."""
    at = utcnow() + timedelta(seconds=delay_seconds)
    job = _move(job_id, Q, [R], next_retry_at=at, heartbeat_at=None, worker_name=None)
    if job is not None:
        job.message = (
            f"{reason} — retrying (attempt {job.attempts + 1} of {job.max_attempts}) at {at:%H:%M:%S} UTC"
        )[:500]
        job.error = reason[:2000]
        record(job, "retried", reason)
        db.session.commit()
    return job


def interrupt(job_id: uuid.UUID, reason: str, *, count_attempt: bool = True) -> Job | None:
    """A running job lost its worker: queue it again, or fail it after its last attempt.

    ``count_attempt=False`` is for a deploy handing the job back: that try was not the job's fault.
    """
    job = db.session.get(Job, job_id, populate_existing=True)
    if job is None or job.status != R.value:
        return None
    if job.cancel_requested:
        return mark_cancelled(job_id, "Cancelled while it ran. Nothing from the unfinished run was kept.")
    if count_attempt and job.attempts >= job.max_attempts:
        return fail(job_id, f"{reason}; gave up after {job.attempts} attempts")
    attempts = job.attempts if count_attempt else max(0, job.attempts - 1)
    # Due at once: the reconciler hands it to the queue at its next pass (or sooner, see reconciler.py).
    moved = _move(job_id, Q, [R], heartbeat_at=None, worker_name=None, next_retry_at=utcnow(), attempts=attempts)
    if moved is not None:
        moved.message = f"{reason} — retrying (attempt {moved.attempts + 1} of {moved.max_attempts}) now"[:500]
        moved.error = reason[:2000]
        record(moved, "interrupted", reason)
        db.session.commit()
    return moved


def request_cancel(job_id: uuid.UUID) -> Job | None:
    """Cancel a queued job now, or ask a running one to stop at its next check."""
    job = _move(job_id, C, [Q], message="Cancelled before it started", finished_at=utcnow(), cancel_requested=True)
    if job is not None:
        record(job, "cancelled", "before it started")
        cancel_dependents(job, "skipped: the job it depends on was cancelled")
        db.session.commit()
        return job
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == R.value)
        .values(cancel_requested=True, message="Cancelling…", updated_at=utcnow())
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    if db.session.execute(stmt).scalar_one_or_none() is None:
        db.session.rollback()
        return None
    job = db.session.get(Job, job_id, populate_existing=True)
    assert job is not None, "the row the UPDATE just matched"
    record(job, "cancel_requested")
    db.session.commit()
    return job


def mark_cancelled(job_id: uuid.UUID, message: str = "Cancelled") -> Job | None:
    """Running -> cancelled, once the job has stopped and cleaned up."""
    job = _move(job_id, C, [R], message=message, finished_at=utcnow())
    if job is not None:
        record(job, "cancelled", message, seconds=job.duration_seconds)
        cancel_dependents(job, "skipped: the job it depends on was cancelled")
        db.session.commit()
    return job


def requeue(job_id: uuid.UUID) -> Job | None:
    """Failed or cancelled -> queued again, on a person's request (a fresh set of attempts)."""
    job = _move(
        job_id,
        Q,
        [F, C],
        attempts=0,
        error=None,
        message="Queued (retry)",
        cancel_requested=False,
        progress_done=0,
        progress_total=None,
        started_at=None,
        finished_at=None,
        next_retry_at=None,
        announced_at=None,
    )
    if job is not None:
        record(job, "requeued", "retry requested")
        db.session.commit()
    return job


def cancel_dependents(job: Job, reason: str) -> None:
    """Cancel the queued jobs that were waiting for ``job`` (the caller commits).

    One conditional UPDATE, like every other move: a dependant that started meanwhile is left alone.
    """
    stmt = (
        update(Job)
        .where(or_(Job.depends_on_id == job.id, Job.parent_id == job.id), Job.status.in_(_sources(C, [Q])))
        .values(status=C.value, message=reason, error=reason, finished_at=utcnow(), updated_at=utcnow(),
                cancel_requested=True, next_retry_at=None)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    for child in db.session.scalars(stmt).all():
        record(child, "cancelled", reason)


def assign_rq_job(job_id: uuid.UUID) -> str:
    """Give the row a fresh RQ job id for its next delivery; older deliveries become stale."""
    runs = db.session.execute(
        update(Job).where(Job.id == job_id).values(runs=Job.runs + 1).returning(Job.runs)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    rq_job_id = f"{job_id}_{runs}"
    # The retry this delivery carries is no longer due: it is on its way.
    db.session.execute(
        update(Job).where(Job.id == job_id).values(rq_job_id=rq_job_id, enqueued_at=None, next_retry_at=None)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return rq_job_id


def note_handed_to_queue(job_id: uuid.UUID, rq_job_id: str, ok: bool) -> None:
    """Record whether Redis took the delivery; a row Redis did not take waits for the reconciler."""
    values: dict[str, Any] = {"enqueued_at": utcnow()} if ok else {
        "enqueued_at": None,
        "message": "Waiting for the queue — it will start as soon as the queue is reachable again",
    }
    db.session.execute(
        update(Job).where(Job.id == job_id, Job.rq_job_id == rq_job_id, Job.status == Q.value).values(**values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def save_partial_result(job_id: uuid.UUID, partial: dict[str, Any]) -> None:
    """Save what a running job has done so far (e.g. who was already e-mailed), so a retry skips it."""
    db.session.execute(
        update(Job).where(Job.id == job_id, Job.status == R.value).values(result=partial)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def cancel_requested(job_id: uuid.UUID) -> bool:
    """Whether someone asked to cancel the job (read fresh, transaction ended)."""
    requested = db.session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    db.session.commit()
    return bool(requested)


def heartbeat(job_id: uuid.UUID, worker_name: str) -> None:
    """Say that the process running this job is alive, and which one it is."""
    db.session.execute(
        update(Job).where(Job.id == job_id, Job.status == R.value)
        .values(heartbeat_at=utcnow(), worker_name=worker_name[:200])
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
