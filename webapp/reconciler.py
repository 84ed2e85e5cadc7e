"""The reconciler: make Redis agree with the job rows, which are the truth.

It repairs what RQ alone leaves broken for minutes or forever:
- a running row whose heartbeat stopped (worker SIGKILLed, host gone) is
  interrupted: queued again for another attempt, or failed after the last one;
- a queued row that Redis does not carry (Redis flushed or restarted without
  persistence, Redis down at submit time, a delivery lost between pop and start,
  an RQ retry budget used up) is handed over again under a fresh RQ job id, so any
  old copy that surfaces later is recognised as stale and skipped;
- a running row whose user asked to cancel and that did not stop within the grace
  period has its work process stopped.
Only one reconciler runs at a time (a PostgreSQL advisory lock), so nothing is
handed over twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from flask import current_app
from redis.exceptions import RedisError
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer
from sqlalchemy import and_, or_, select, text

from webapp import jobstate, queueing
from webapp.extensions import db
from webapp.models import Job, JobStatus
from webapp.models.job import utcnow

log = logging.getLogger("backhaul.reconciler")

LOCK_KEY = 0x6261636B  # "back"
SETTLE_SECONDS = 10
LOST_IN_QUEUE_SECONDS = 120
BATCH = 500
LIVE_RQ_STATUSES = {"queued", "scheduled", "deferred", "started"}


@dataclass
class Repairs:
    """What one pass changed."""

    interrupted: int = 0
    requeued: int = 0
    stopped: int = 0
    skipped: bool = False
    details: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """The number of repairs."""
        return self.interrupted + self.requeued + self.stopped


def reconcile_if_leader() -> Repairs:
    """Run one pass if no other process is running one right now."""
    with db.engine.connect() as lock_conn:
        got = lock_conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar()
        if not got:
            return Repairs(skipped=True)
        try:
            return reconcile()
        finally:
            lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            lock_conn.commit()


def reconcile() -> Repairs:
    """One pass over live rows; see the module docstring."""
    repairs = Repairs()
    now = utcnow()
    stale = now - timedelta(seconds=current_app.config["JOB_STALE_SECONDS"])
    _interrupt_silent(repairs, stale)
    _stop_unheeded_cancels(repairs, now - timedelta(seconds=current_app.config["CANCEL_GRACE_SECONDS"]))
    _hand_over_missing(repairs, now)
    if repairs.total:
        log.info("reconciler repaired %s jobs: %s", repairs.total, "; ".join(repairs.details[:20]),
                 extra={"event": "reconciled", "repairs": repairs.total})
    return repairs


def _interrupt_silent(repairs: Repairs, stale) -> None:
    """Running rows with no heartbeat since ``stale``: their process is gone."""
    rows = db.session.scalars(
        select(Job).where(
            Job.status == JobStatus.RUNNING.value,
            or_(Job.heartbeat_at < stale, and_(Job.heartbeat_at.is_(None), Job.updated_at < stale)),
        ).limit(BATCH)
    ).all()
    for job in rows:
        moved = jobstate.interrupt(job.id, "Interrupted: its worker stopped responding")
        if moved is None:
            continue
        repairs.interrupted += 1
        repairs.details.append(f"{job.id} interrupted")
        jobstate.record(moved, "reconciled", "running job had no heartbeat")
        db.session.commit()
        if moved.status == JobStatus.QUEUED.value:
            queueing.enqueue(moved)


def _stop_unheeded_cancels(repairs: Repairs, before) -> None:
    """Running rows asked to cancel longer ago than the grace period: stop their process."""
    rows = db.session.scalars(
        select(Job).where(
            Job.status == JobStatus.RUNNING.value, Job.cancel_requested.is_(True), Job.updated_at < before
        ).limit(BATCH)
    ).all()
    for job in rows:
        if queueing.stop_running(job):
            repairs.stopped += 1
            repairs.details.append(f"{job.id} stopped after cancel grace")


def _hand_over_missing(repairs: Repairs, now) -> None:
    """Queued rows whose delivery Redis does not hold: hand them over again."""
    settle = now - timedelta(seconds=SETTLE_SECONDS)
    rows = db.session.scalars(
        select(Job).where(
            Job.status == JobStatus.QUEUED.value,
            Job.updated_at < settle,
            or_(Job.next_retry_at.is_(None), Job.next_retry_at < settle),
        ).order_by(Job.created_at).limit(BATCH)
    ).all()
    if not rows:
        return
    conn = queueing.redis_conn()
    ids = [job.rq_job_id or "" for job in rows]
    try:
        rq_jobs = RQJob.fetch_many(ids, connection=conn, serializer=JSONSerializer)
    except RedisError:
        log.warning("reconciler: Redis unreachable; will try again")
        return
    for job, rq_job in zip(rows, rq_jobs, strict=True):
        why = _why_missing(job, rq_job, now)
        if why is None:
            continue
        if job.depends_on is not None and job.depends_on.status in (
            JobStatus.QUEUED.value, JobStatus.RUNNING.value
        ) and why == "deferred":
            continue
        jobstate.record(job, "reconciled", why)
        db.session.commit()
        if queueing.enqueue(job):
            repairs.requeued += 1
            repairs.details.append(f"{job.id} handed over again ({why})")


def _why_missing(job: Job, rq_job: RQJob | None, now) -> str | None:
    """Why the queued row ``job`` needs a new delivery, or None if Redis has it in hand."""
    if rq_job is None:
        return "not in Redis" if job.enqueued_at else "never reached Redis"
    status = rq_job.get_status(refresh=False)
    status = getattr(status, "value", status)
    if status not in LIVE_RQ_STATUSES:
        return f"RQ says {status}"
    if status == "deferred":
        parent = job.depends_on
        if parent is None or parent.status == JobStatus.SUCCEEDED.value:
            return "deferred"
        return None
    if status in ("queued", "started") and job.updated_at < now - timedelta(seconds=LOST_IN_QUEUE_SECONDS):
        try:
            position = queueing.get_queue(rq_job.origin).get_job_position(rq_job.id)
        except RedisError:
            return None
        if position is None:
            return "lost from its queue"
    return None
