"""The shared runtime around every job: claim the row, report progress, honour cancel, record the end.

A job entry point is ``@job_entry def fn(ctx: JobContext) -> dict``; RQ calls the
wrapped function with the row id only. The wrapper:
- runs the job on the row the worker claimed (queued -> running) in its main process
  before forking this one, or claims it here; a stale or duplicate delivery is dropped;
- caps the work process's memory (RLIMIT_AS) so one bad input fails one job;
- records a permanent failure, a retry (the row's ``next_retry_at``, handed to the queue
  by the reconciler) or a cancellation on the row, and tells RQ only the outcome;
- commits what the job stored together with its success, or removes it;
- hands the result to the worker's main process (a file in the scratch root), which
  records it on the row once this process has exited: it holds a warm connection,
  this process would have to open one. A job that other jobs wait on records its
  success here, before RQ releases them, so they always find it succeeded.
The worker's main process also keeps the row's heartbeat while the job runs (jobs/worker.py).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import current_app
from redis.exceptions import RedisError
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from jobs.errors import JobCancelled, JobFailed, TransientError
from webapp import jobstate, storage
from webapp.extensions import db
from webapp.kinds import describe_seconds, get_kind, timeout_for
from webapp.models import Job, StoredFile

log = logging.getLogger("backhaul.runtime")

PROGRESS_EVERY_SECONDS = 0.5
CANCEL_CHECK_EVERY_SECONDS = 1.0


def scratch_root() -> Path:
    """Where jobs keep temporary files; one folder per job, removed when the job ends."""
    root = Path(current_app.config.get("SCRATCH_DIR") or Path(tempfile.gettempdir()) / "backhaul-scratch")
    root.mkdir(parents=True, exist_ok=True)
    return root


def scratch_dir_for(job_id: uuid.UUID | str) -> Path:
    """The scratch folder of one job (also used to clean up after a killed process)."""
    return scratch_root() / str(job_id)


class JobContext:
    """What a running job may ask of the runtime."""

    def __init__(self, job: Job) -> None:
        self.job_id: uuid.UUID = job.id
        self.kind: str = job.kind
        self.owner_id: int = job.owner_id
        self.params: dict[str, Any] = dict(job.params or {})
        self.attempt: int = job.attempts
        self.max_attempts: int = job.max_attempts
        self._scratch: Path | None = None
        self._last_progress = 0.0
        self._quarters_logged = 0
        self._last_cancel_check = time.monotonic()

    @property
    def scratch(self) -> Path:
        """This job's own folder for temporary files (created on first use, removed when the job ends)."""
        if self._scratch is None:
            self._scratch = scratch_dir_for(self.job_id)
            self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def progress(self, done: int, total: int | None, message: str | None = None, *, force: bool = False) -> None:
        """Report progress; writes are throttled, and each write also checks for cancellation."""
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_EVERY_SECONDS and done != total:
            return
        self._last_progress = now
        jobstate.report_progress(self.job_id, done, total, message)
        if total:
            quarter = min(4, 4 * done // total)
            if quarter > self._quarters_logged:
                self._quarters_logged = quarter
                log.info("job progress %s: %s%%", self.kind, quarter * 25,
                         extra={"job_id": str(self.job_id), "kind": self.kind, "attempt": self.attempt,
                                "event": "progress", "done": done, "total": total})
        self.check_cancelled(force=True)

    def check_cancelled(self, *, force: bool = False) -> None:
        """Raise JobCancelled if the user asked to cancel (checked at most once a second)."""
        now = time.monotonic()
        if not force and now - self._last_cancel_check < CANCEL_CHECK_EVERY_SECONDS:
            return
        self._last_cancel_check = now
        if jobstate.cancel_requested(self.job_id):
            raise JobCancelled()


def cap_memory(megabytes: int | None) -> None:
    """Limit this (work-horse) process's address space to its current size plus ``megabytes``."""
    if not megabytes:
        return
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[0])
    current = pages * resource.getpagesize()
    limit = current + megabytes * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


# Rows the worker's main process claimed for the delivery it is about to fork a work
# process for, by RQ job id (None: the row was not this delivery's to run). The work
# process inherits this dict with the rest of the parent's memory.
_claims: dict[str, Job | None] = {}


def forget_claims() -> None:
    """Before claiming the next delivery: none of the earlier ones is this one's."""
    _claims.clear()


def hold_claim(rq_job_id: str, job: Job | None) -> None:
    """Before forking: the claim the work process for ``rq_job_id`` will find."""
    _claims[rq_job_id] = job


def _claim(row_id: uuid.UUID, rq_job: Any, rq_job_id: str) -> Job | None:
    """The row claimed for this delivery by the worker, or claimed here when it did not."""
    if rq_job_id in _claims:
        return _claims.pop(rq_job_id)
    worker_name = f"{rq_job.worker_name if rq_job is not None and rq_job.worker_name else 'worker'}/{os.getpid()}"
    return jobstate.start(row_id, rq_job_id, worker_name)


def run_job(job_id: str, fn: Callable[[JobContext], dict]) -> dict[str, Any]:
    """Claim, run and record one job; see the module docstring.

    What RQ gets back (its result, or the exception it stores) names the job and its
    outcome only: rq-dashboard shows both unescaped, and the user's words stay in our rows.
    """
    app = current_app
    rq_job = get_current_job()
    rq_job_id = rq_job.id if rq_job is not None else f"{job_id}_local"
    row_id = uuid.UUID(job_id)
    job = _claim(row_id, rq_job, rq_job_id)
    if job is None:
        log.info("job %s: delivery %s is stale or the job is not queued; skipped", job_id, rq_job_id)
        return {"job_id": job_id, "outcome": "skipped"}
    policy = get_kind(job.kind)
    ctx = JobContext(job)
    try:
        cap_memory(policy.memory_mb and min(policy.memory_mb, app.config["JOB_MEMORY_MB"]))
        result = fn(ctx) or {}
    except JobCancelled:
        _discard_uncommitted_outputs()
        jobstate.mark_cancelled(row_id, "Cancelled while it ran. Nothing from the unfinished run was kept.")
        return {"job_id": job_id, "outcome": "cancelled"}
    except JobTimeoutException:
        _discard_uncommitted_outputs()
        limit = describe_seconds(timeout_for(policy, app.config["JOB_TIMEOUTS"]))
        jobstate.fail(row_id, f"Took longer than {limit} and was stopped.")
        raise JobRecorded(job, "failed: time limit") from None
    except MemoryError:
        _discard_uncommitted_outputs()
        jobstate.fail(row_id, f"Ran out of memory (limit {policy.memory_mb} MB); the input is too large to process.")
        raise JobRecorded(job, "failed: memory cap") from None
    except JobFailed as exc:
        _discard_uncommitted_outputs()
        jobstate.fail(row_id, str(exc) or "Failed")
        raise JobRecorded(job, "failed") from None
    except Exception as exc:
        _discard_uncommitted_outputs()
        reason = str(exc) if isinstance(exc, TransientError) else f"Unexpected error ({type(exc).__name__}: {exc})"
        log.warning("job %s attempt %s raised", job_id, job.attempts, exc_info=True)
        outcome = _retry_or_fail(row_id, reason[:300])
        raise JobRecorded(job, outcome) from None
    else:
        _finish(row_id, rq_job, rq_job_id, result)
        return {"job_id": job_id, "outcome": "succeeded"}
    finally:
        if ctx._scratch is not None:
            shutil.rmtree(ctx._scratch, ignore_errors=True)


class JobRecorded(Exception):
    """What RQ is told when a job did not succeed: the row already holds the reason, in the user's words."""

    def __init__(self, job: Job, outcome: str) -> None:
        super().__init__(f"{job.kind} {job.id} attempt {job.attempts}: {outcome} (the job row has the reason)")


def _finish(row_id: uuid.UUID, rq_job: Any, rq_job_id: str, result: dict[str, Any]) -> None:
    """Record success: with the job's outputs in one transaction, or handed to the worker's main process.

    A job that wrote rows (stored files, photo variants) commits them together with its
    success, here: a process killed before that commit leaves neither, one killed after it
    leaves a finished job, so a re-run never finds a file from an earlier one. A job that
    wrote nothing hands its result over (cheaper: this process opens no connection), as
    does nothing else: a job other jobs wait on records here, before RQ releases them.
    """
    pending = _pending_outputs()
    if pending or db.session.new or db.session.dirty or db.session.deleted or _others_wait_on(rq_job):
        if jobstate.succeed(row_id, result, str(result.get("summary", "Done")), rq_job_id=rq_job_id) is None:
            # The row is not this delivery's any more (the reconciler gave it to another
            # process): what this run stored must not stay behind.
            _delete_bytes(pending)
        return
    hand_over_result(rq_job_id, result)


def _pending_outputs() -> list[StoredFile]:
    """Stored files this job added and has not committed (taken off the session's list)."""
    return db.session.info.pop(storage.UNCOMMITTED_OUTPUTS, [])


def _delete_bytes(files: list[StoredFile]) -> None:
    """Remove the bytes of files whose rows were never committed."""
    for stored in files:
        try:
            storage.backend(stored.backend).delete(stored.key)
        except Exception:  # noqa: BLE001 - the storage sweep removes what this misses
            log.warning("could not remove uncommitted output %s", stored.key, exc_info=True)


def _discard_uncommitted_outputs() -> None:
    """Roll back the job's session, removing the bytes of files it stored but never committed."""
    pending = _pending_outputs()
    db.session.rollback()
    _delete_bytes(pending)


def _others_wait_on(rq_job: Any) -> bool:
    """Whether jobs depend on this one (RQ releases them as soon as this process returns)."""
    if rq_job is None:
        return True
    try:
        return bool(rq_job.dependent_ids)
    except RedisError:
        return True  # cannot tell: record here, which is always correct


def _result_file(rq_job_id: str) -> Path:
    """Where a work process leaves its result for the worker's main process (same host, same scratch root)."""
    folder = scratch_root() / "results"
    folder.mkdir(exist_ok=True)
    return folder / f"{rq_job_id}.json"


def remove_stale_results(older_than_seconds: float = 3600) -> int:
    """Delete results no main process collected (it died first; the job was handed over again
    under a new delivery id, so nobody will ever read them). Returns how many went."""
    folder = scratch_root() / "results"
    cutoff = time.time() - older_than_seconds
    removed = 0
    for path in folder.glob("*.json") if folder.is_dir() else ():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def hand_over_result(rq_job_id: str, result: dict[str, Any]) -> None:
    """In the work process: leave the result for the main process, which records it after this process exits.

    A file rather than RQ's stored result: the row must not depend on Redis being there.
    """
    final = _result_file(rq_job_id)
    partial = final.with_suffix(".part")
    partial.write_text(json.dumps(result))
    os.replace(partial, final)


def record_result(row_id: uuid.UUID, rq_job_id: str) -> bool:
    """In the worker's main process: record what the work process handed over, if the row still awaits it.

    True when the row moved to succeeded. Nothing happens when the work process left
    nothing (it failed, was killed, or recorded the end itself), nor to a row that is
    not running this delivery any more.
    """
    final = _result_file(rq_job_id)
    try:
        result = json.loads(final.read_text())
    except FileNotFoundError:
        return False
    try:
        return jobstate.succeed(row_id, result, str(result.get("summary", "Done")), rq_job_id=rq_job_id) is not None
    finally:
        final.unlink(missing_ok=True)


def _retry_or_fail(row_id: uuid.UUID, reason: str) -> str:
    """Queue another attempt after a backoff if attempts remain, else fail for good; says which.

    The row owns the retry (``next_retry_at``): the reconciler hands it to the queue when it
    is due, so no retry depends on RQ's scheduler or on anything else held only in Redis.
    """
    job = db.session.get(Job, row_id, populate_existing=True)
    if job is not None and job.attempts < job.max_attempts:
        from webapp.queueing import retry_delay

        jobstate.retry_later(row_id, reason, retry_delay(job.attempts))
        return "retrying"
    jobstate.fail(row_id, reason)
    return "failed"


def job_entry(fn: Callable[[JobContext], dict]) -> Callable[[str], dict]:
    """Turn ``fn(ctx)`` into an RQ entry point that takes the job row id."""

    @functools.wraps(fn)
    def entry(job_id: str) -> dict:
        return run_job(job_id, fn)

    return entry
