"""The bridge from job rows to RQ: connections, queues, enqueue and cancel.

Job arguments are the row id only, serialised as JSON. Redis may be away at any
moment; nothing here lets that become a 500 — the row stays queued and the
reconciler hands it over once Redis is back.
"""

from __future__ import annotations

import logging
import random
import uuid

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer

from webapp import jobstate, redis_client
from webapp.extensions import db
from webapp.kinds import QUEUES, get_kind, timeout_for
from webapp.models.job import Job, JobStatus

log = logging.getLogger(__name__)


def redis_conn() -> Redis:
    """The Redis client for the current app (built by webapp.redis_client, like every other)."""
    return redis_client.shared(current_app.config["REDIS_URL"])


def get_queue(name: str) -> Queue:
    """The RQ queue ``name``, speaking JSON."""
    if name not in QUEUES:
        raise KeyError(f"unknown queue {name!r}")
    return Queue(name, connection=redis_conn(), serializer=JSONSerializer)


def retry_delay(attempt: int) -> float:
    """Seconds to wait before the try after failed ``attempt`` (1-based): exponential, with jitter."""
    base = float(current_app.config["RETRY_BASE_SECONDS"])
    return max(1.0, round(base * 2 ** max(0, attempt - 1) * random.uniform(0.5, 1.5), 1))


def submit(kind: str, owner_id: int, params: dict, title: str, *, depends_on: Job | None = None,
           parent: Job | None = None, queue: str | None = None) -> Job:
    """Create the row, commit it, then hand it to Redis (the order matters: a fast worker must find the row).

    The returned Job is not in the session and carries every column as written, so
    handing it over and redirecting to it cost no second query.
    """
    job = jobstate.create(kind, owner_id, params, title, depends_on=depends_on, parent=parent, queue=queue)
    db.session.commit()
    assert job.rq_job_id, "create() names the first delivery"
    _push(job, job.rq_job_id, first=True, depends_on=depends_on)
    return job


def enqueue(job: Job) -> bool:
    """Hand ``job`` to its RQ queue under a fresh RQ job id; False when Redis is unreachable."""
    return _push(job, jobstate.assign_rq_job(job.id), first=False, depends_on=job.depends_on)


def _push(job: Job, rq_job_id: str, *, first: bool, depends_on: Job | None) -> bool:
    """Put one delivery of ``job`` on its queue; the row records only what did not go as planned."""
    policy = get_kind(job.kind)
    # RQ holds ids and kinds only: rq-dashboard prints description and meta unescaped,
    # so nothing a user wrote (titles live in our rows) ever goes into Redis. No RQ Retry
    # either: the row owns retries (next_retry_at) and the reconciler hands them over.
    options = {
        "job_id": rq_job_id,
        "job_timeout": timeout_for(policy, current_app.config["JOB_TIMEOUTS"]),
        "result_ttl": current_app.config["RESULT_TTL_SECONDS"],
        "failure_ttl": current_app.config["FAILURE_TTL_SECONDS"],
        "description": f"{job.kind} {job.id}",
        "meta": {"kind": job.kind, "job_id": str(job.id)},
    }
    try:
        if depends_on is not None and depends_on.status in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
            # RQ decides atomically: it queues this one at once if the other has already finished.
            options["depends_on"] = depends_on.rq_job_id
        # The row's queue, not the kind's: it may have been chosen for this submission (kinds.queue_for).
        get_queue(job.queue).enqueue(policy.func, str(job.id), **options)
    except RedisError as exc:
        log.warning("job %s not handed to Redis (%s); the reconciler will retry", job.id, exc)
        jobstate.note_handed_to_queue(job.id, rq_job_id, ok=False)
        return False
    if not first:
        # A first delivery was stamped when the row was created; re-deliveries are stamped now.
        jobstate.note_handed_to_queue(job.id, rq_job_id, ok=True)
    return True


def cancel(job_id: uuid.UUID) -> Job | None:
    """Cancel a job: a queued one never starts, a running one stops at its next check."""
    job = jobstate.request_cancel(job_id)
    if job is not None and job.status == JobStatus.CANCELLED.value and job.rq_job_id:
        try:
            RQJob.fetch(job.rq_job_id, connection=redis_conn(), serializer=JSONSerializer).cancel()
        except (RedisError, NoSuchJobError, InvalidJobOperation) as exc:
            # The row already says cancelled; the runtime refuses to start it anyway.
            log.info("RQ job %s not cancelled in Redis: %s", job.rq_job_id, exc)
    return job


def stop_running(job: Job) -> bool:
    """Stop a running job's work process now (used after the cancel grace period)."""
    if not job.rq_job_id:
        return False
    try:
        send_stop_job_command(redis_conn(), job.rq_job_id, serializer=JSONSerializer)
    except (RedisError, InvalidJobOperation, NoSuchJobError) as exc:
        log.info("could not stop RQ job %s: %s", job.rq_job_id, exc)
        return False
    return True


def retry(job_id: uuid.UUID) -> Job | None:
    """Queue a failed or cancelled job again with a fresh set of attempts."""
    job = jobstate.requeue(job_id)
    if job is not None:
        enqueue(job)
    return job
