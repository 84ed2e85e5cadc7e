"""The reconciler: make Redis agree with the job rows, which are the truth.

It hands due retries to the queue (the row owns them: ``next_retry_at``), and repairs
what RQ alone leaves broken for minutes or forever:
- a running row whose heartbeat stopped (worker SIGKILLed, host gone) is
  interrupted: queued again for another attempt, or failed after the last one;
- a queued row that Redis does not carry (Redis flushed or restarted without
  persistence, Redis down at submit time, a delivery lost between pop and start,
  an RQ retry budget used up) is handed over again under a fresh RQ job id, so any
  old copy that surfaces later is recognised as stale and skipped;
- a running row whose user asked to cancel and that did not stop within the grace
  period has its work process stopped.
An RQ state (queued, started, deferred, scheduled, or one a newer RQ adds) is trusted
only while it is on time; only the statuses in DEAD_RQ_STATUSES are taken at their
word. Only one reconciler runs at a time (a PostgreSQL advisory lock), so nothing is
handed over twice.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta

from flask import current_app
from redis.exceptions import RedisError
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer
from sqlalchemy import and_, func, or_, select, text

from webapp import jobstate, queueing
from webapp.extensions import db
from webapp.models import Job, JobStatus
from webapp.models.job import utcnow

log = logging.getLogger("backhaul.reconciler")

LOCK_KEY = 0x6261636B  # "back"
SETTLE_SECONDS = 10
LOST_IN_QUEUE_SECONDS = 120
BATCH = 500
# RQ statuses after which a delivery will never run again. Anything else is "in hand",
# but only while it is on time (see _why_missing).
DEAD_RQ_STATUSES = {"finished", "failed", "stopped", "canceled"}


@dataclass
class Repairs:
    """What one pass changed."""

    interrupted: int = 0
    retried: int = 0
    requeued: int = 0
    stopped: int = 0
    skipped: bool = False
    redis_unreachable: bool = False
    details: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """The number of repairs."""
        return self.interrupted + self.retried + self.requeued + self.stopped


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
    _interrupt_orphans_of_dead_workers_here(repairs)
    _interrupt_silent(repairs, stale)
    _stop_unheeded_cancels(repairs, now - timedelta(seconds=current_app.config["CANCEL_GRACE_SECONDS"]))
    _hand_over_due_retries(repairs, now)
    _hand_over_missing(repairs, now)
    if repairs.total:
        log.info("reconciler repaired %s jobs: %s", repairs.total, "; ".join(repairs.details[:20]),
                 extra={"event": "reconciled", "repairs": repairs.total})
    return repairs


def worker_process_of(worker_name: str | None) -> tuple[str, int] | None:
    """(host, main pid) from a worker name "host.pid.suffix" as worker.py builds it; None for other names."""
    parts = (worker_name or "").split("/", 1)[0].rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _process_alive(pid: int) -> bool:
    """Whether a live process with this pid exists on this host (a zombie is not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _interrupt_orphans_of_dead_workers_here(repairs: Repairs) -> None:
    """Running rows claimed by a worker of this host whose process is gone: interrupt them now.

    A worker killed and restarted at once (honcho, systemd, a container restart on the same
    host) need not wait for the heartbeat to go stale: the kernel already knows its pid is gone.
    """
    host = socket.gethostname()
    rows = db.session.scalars(
        select(Job).where(Job.status == JobStatus.RUNNING.value, Job.worker_name.startswith(f"{host}.", autoescape=True))
        .limit(BATCH)
    ).all()
    for job in rows:
        owner = worker_process_of(job.worker_name)
        if owner is None or owner[0] != host or _process_alive(owner[1]):
            continue
        moved = jobstate.interrupt(job.id, "Interrupted: its worker stopped")
        if moved is None:
            continue
        repairs.interrupted += 1
        repairs.details.append(f"{job.id} interrupted (worker process {owner[1]} is gone)")
        jobstate.record(moved, "reconciled", f"worker process {owner[1]} on this host is gone")
        db.session.commit()


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


def _hand_over_due_retries(repairs: Repairs, now) -> None:
    """Queued rows whose next attempt is due: hand each to its queue under a new delivery id."""
    rows = db.session.scalars(
        select(Job).where(Job.status == JobStatus.QUEUED.value, Job.next_retry_at <= now)
        .order_by(Job.next_retry_at).limit(BATCH)
    ).all()
    for job in rows:
        late = (now - job.next_retry_at).total_seconds()
        if queueing.enqueue(job):
            repairs.retried += 1
            repairs.details.append(f"{job.id} retry handed over ({late:.1f} s after due)")


def seconds_until_next_retry(now=None) -> float | None:
    """How long until the earliest queued retry is due (0 if one is overdue); None when none waits."""
    due = db.session.scalar(
        select(func.min(Job.next_retry_at)).where(Job.status == JobStatus.QUEUED.value)
    )
    db.session.commit()
    if due is None:
        return None
    return max(0.0, (due - (now or utcnow())).total_seconds())


def _hand_over_missing(repairs: Repairs, now) -> None:
    """Queued rows whose delivery Redis does not hold: hand them over again."""
    settle = now - timedelta(seconds=SETTLE_SECONDS)
    rows = db.session.scalars(
        select(Job).where(
            Job.status == JobStatus.QUEUED.value,
            # A row Redis refused (enqueued_at unset) is handed over at once; others get time
            # to settle, so a delivery on its way is not mistaken for a lost one.
            or_(Job.enqueued_at.is_(None), Job.updated_at < settle),
            Job.next_retry_at.is_(None),
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
        repairs.redis_unreachable = True
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
    """Why the queued row ``job`` needs a new delivery, or None while Redis has it in hand, on time."""
    if rq_job is None:
        return "not in Redis" if job.enqueued_at else "never reached Redis"
    reported = rq_job.get_status(refresh=False)
    status = str(getattr(reported, "value", reported))
    if status in DEAD_RQ_STATUSES:
        return f"RQ says {status}"
    if status == "deferred":
        parent = job.depends_on
        if parent is None or parent.status == JobStatus.SUCCEEDED.value:
            return "deferred"
        return None
    if status == "scheduled":
        # Backhaul never schedules in RQ (the row owns retries): something else did, e.g.
        # rq-dashboard cleaning a registry. Nothing runs RQ's scheduler, so it would wait forever.
        return "scheduled in RQ, which nothing here runs"
    if job.updated_at < now - timedelta(seconds=LOST_IN_QUEUE_SECONDS):
        # Queued, started, or a status a newer RQ adds: on time only while it is still in
        # its queue or a worker holds it.
        try:
            position = queueing.get_queue(rq_job.origin).get_job_position(rq_job.id)
        except RedisError:
            return None
        if position is None:
            return f"lost from its queue (RQ says {status})"
    return None
