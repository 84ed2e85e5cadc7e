"""The shared runtime around every job: claim the row, report progress, honour cancel, record the end.

A job entry point is ``@job_entry def fn(ctx: JobContext) -> dict``; RQ calls the
wrapped function with the row id only. The wrapper:
- claims the row (queued -> running) or quietly drops a stale/duplicate delivery;
- keeps a heartbeat on the row from a small thread, so the reconciler can tell a
  live job from one whose process died;
- caps the work process's memory (RLIMIT_AS) so one bad input fails one job;
- records success, a permanent failure, a retry or a cancellation on the row, and
  re-raises failures so RQ's own failure handling and retries run.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import current_app
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from jobs.errors import JobCancelled, JobFailed, TransientError
from webapp import jobstate
from webapp.extensions import db
from webapp.kinds import describe_seconds, get_kind, timeout_for
from webapp.models import Job

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
        self.scratch: Path = scratch_dir_for(job.id)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._last_progress = 0.0
        self._quarters_logged = 0
        self._last_cancel_check = time.monotonic()

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
        requested = db.session.scalar(db.select(Job.cancel_requested).where(Job.id == self.job_id))
        db.session.commit()
        if requested:
            raise JobCancelled()


class Heartbeat(threading.Thread):
    """Touches the row's heartbeat every few seconds while the job runs."""

    def __init__(self, app, job_id: uuid.UUID, every: float) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.app = app
        self.job_id = job_id
        self.every = every
        self.stopped = threading.Event()

    def run(self) -> None:
        """Beat until stopped; a failed beat is logged and tried again next time."""
        while not self.stopped.wait(self.every):
            try:
                with self.app.app_context():
                    jobstate.heartbeat(self.job_id)
            except Exception:  # noqa: BLE001 - a missed beat must never kill the job
                log.warning("heartbeat for job %s failed", self.job_id, exc_info=True)

    def stop(self) -> None:
        """Stop beating and wait for the thread."""
        self.stopped.set()
        self.join(timeout=5)


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


def _no_more_rq_retries() -> None:
    """Tell RQ not to retry this delivery (the row has decided it is final)."""
    rq_job = get_current_job()
    if rq_job is not None:
        rq_job.retries_left = 0


def run_job(job_id: str, fn: Callable[[JobContext], dict]) -> dict[str, Any]:
    """Claim, run and record one job; see the module docstring."""
    app = current_app._get_current_object()
    rq_job = get_current_job()
    rq_job_id = rq_job.id if rq_job is not None else f"{job_id}_local"
    # The work process's pid goes with the worker name: operators (and fault tests) can find it.
    worker_name = f"{rq_job.worker_name if rq_job is not None and rq_job.worker_name else 'worker'}/{os.getpid()}"
    row_id = uuid.UUID(job_id)
    job = jobstate.start(row_id, rq_job_id, worker_name)
    if job is None:
        log.info("job %s: delivery %s is stale or the job is not queued; skipped", job_id, rq_job_id)
        return {"skipped": True}
    policy = get_kind(job.kind)
    ctx = JobContext(job)
    beat = Heartbeat(app, row_id, app.config["JOB_HEARTBEAT_SECONDS"])
    beat.start()
    try:
        cap_memory(policy.memory_mb and min(policy.memory_mb, app.config["JOB_MEMORY_MB"]))
        result = fn(ctx) or {}
    except JobCancelled:
        beat.stop()
        db.session.rollback()
        jobstate.mark_cancelled(row_id, "Cancelled while running; partial output removed")
        return {"cancelled": True}
    except JobTimeoutException:
        beat.stop()
        db.session.rollback()
        _no_more_rq_retries()
        limit = describe_seconds(timeout_for(policy, app.config["JOB_TIMEOUTS"]))
        jobstate.fail(row_id, f"Took longer than {limit} and was stopped.")
        raise
    except MemoryError:
        beat.stop()
        db.session.rollback()
        _no_more_rq_retries()
        jobstate.fail(row_id, f"Ran out of memory (limit {policy.memory_mb} MB); the input is too large to process.")
        raise
    except JobFailed as exc:
        beat.stop()
        db.session.rollback()
        _no_more_rq_retries()
        jobstate.fail(row_id, str(exc) or "Failed")
        raise
    except Exception as exc:
        beat.stop()
        db.session.rollback()
        reason = str(exc) if isinstance(exc, TransientError) else f"Unexpected error ({type(exc).__name__}: {exc})"
        _handle_retryable(row_id, reason[:300])
        raise
    else:
        beat.stop()
        jobstate.succeed(row_id, result, result.get("summary", "Done"))
        return result
    finally:
        shutil.rmtree(ctx.scratch, ignore_errors=True)


def _handle_retryable(row_id: uuid.UUID, reason: str) -> None:
    """Retry later if attempts remain (RQ will deliver again), else fail for good."""
    job = db.session.get(Job, row_id, populate_existing=True)
    rq_job = get_current_job()
    rq_will_retry = rq_job is not None and rq_job.should_retry
    if job is not None and job.attempts < job.max_attempts and rq_will_retry:
        delay = rq_job.get_retry_interval() if rq_job is not None else 0
        jobstate.retry_later(row_id, reason, delay)
    else:
        _no_more_rq_retries()
        jobstate.fail(row_id, reason)


def job_entry(fn: Callable[[JobContext], dict]) -> Callable[[str], dict]:
    """Turn ``fn(ctx)`` into an RQ entry point that takes the job row id."""

    @functools.wraps(fn)
    def entry(job_id: str) -> dict:
        return run_job(job_id, fn)

    return entry
