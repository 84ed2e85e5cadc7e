"""Backhaul's RQ worker: a forking worker that keeps the job rows true.

On top of rq.Worker it:
- claims the job's row (queued -> running) in the main process before forking, and
  records the work horse's result on the row after it exits: the main process has a
  warm database connection and compiled statements, a fresh work horse has neither;
- keeps the row's heartbeat from the main process while the horse works;
- gives each work horse a fresh database pool and an app context;
- fixes the row at once when a work horse dies (killed, OOM, stopped by cancel);
- ties each work horse's life to its worker: if the worker's main process dies, the
  kernel kills the horse too (PR_SET_PDEATHSIG), so no orphan finishes work nobody records;
- on SIGTERM lets the running job finish for a grace period, then hands it back;
- runs the reconciler in a background thread (one at a time across all workers,
  by a PostgreSQL advisory lock), which also hands due retries to the queue.

RQ's own scheduler is not used (the row owns retries), and RQ's reconnect back-off is
capped at a few seconds so an idle worker takes work soon after Redis returns. Every
method overridden here accepts and passes on whatever newer RQ releases add to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import threading
import uuid

from flask import Flask
from redis.exceptions import RedisError
from rq import Worker
from rq.job import Job as RQJob
from sqlalchemy.exc import SQLAlchemyError

from jobs import runtime
from webapp import jobstate, reconciler
from webapp.extensions import db
from webapp.models import Job, JobStatus

log = logging.getLogger("backhaul.worker")

STOPPED = "Interrupted: the work process stopped"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Set when this process queued a retry that is due now, so its reconciler thread hands it
# over without waiting for its next round.
RETRY_DUE = threading.Event()
OUTAGE_RECHECK_SECONDS = 1.0


def die_with_parent(parent_pid: int) -> None:
    """In a work horse: ask the kernel to SIGKILL this process when the worker that forked it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the reconciler still repairs the row
        log.debug("PR_SET_PDEATHSIG unavailable", exc_info=True)
        return
    if os.getppid() != parent_pid:
        # The worker died between fork and prctl: nobody will record this job.
        os._exit(1)


def row_id_of(rq_job: RQJob) -> uuid.UUID | None:
    """The job row id carried by an RQ job (its only argument)."""
    try:
        return uuid.UUID(str(rq_job.args[0]))
    except (IndexError, ValueError, TypeError):
        return None


class BackhaulWorker(Worker):
    """An rq.Worker bound to a Flask app."""

    # RQ waits up to 60 s between reconnects to a Redis that went away; a queue that is
    # back should be served within seconds.
    max_connection_wait_time = 3.0

    def __init__(self, *args, app: Flask, shutdown_grace: float = 25.0, **kwargs) -> None:
        kwargs.setdefault("work_horse_killed_handler", self._note_horse_death)
        super().__init__(*args, **kwargs)
        self.app = app
        self.shutdown_grace = shutdown_grace
        self._handing_back = False
        self._grace_timer: threading.Timer | None = None
        self._death_reason: str | None = None
        self.shutdown_requested = False

    # --- in the work horse -------------------------------------------------
    def main_work_horse(self, job: RQJob, queue, *args, **kwargs) -> None:
        """Run the job in the forked child with its own DB connections and app context."""
        die_with_parent(self._parent_pid)
        # The parent's pooled connections must not be shared with the child.
        with self.app.app_context():
            db.engine.dispose(close=False)
            super().main_work_horse(job, queue, *args, **kwargs)

    # --- in the parent -----------------------------------------------------
    def fork_work_horse(self, job: RQJob, queue, *args, **kwargs) -> None:
        """Claim the row, then fork the horse, which inherits the claim."""
        row_id = row_id_of(job)
        if row_id is not None:
            self._claim(row_id, job)
        self._parent_pid = os.getpid()
        self._death_reason = None
        super().fork_work_horse(job, queue, *args, **kwargs)

    def _claim(self, row_id: uuid.UUID, job: RQJob) -> None:
        """queued -> running for this delivery; when the database fails, the horse tries itself.

        The row names this worker; the horse's pid joins it with the first heartbeat (a
        job done before then never needed it), which keeps that write off every job's path.
        """
        runtime.forget_claims()
        try:
            claimed = self._in_app(jobstate.start, row_id, job.id, self.name, raise_errors=True)
        except SQLAlchemyError:
            log.warning("could not claim job %s before forking; its work process will", row_id, exc_info=True)
            return
        runtime.hold_claim(job.id, claimed)

    def _in_app(self, fn, *args, raise_errors: bool = False):
        """Run a jobstate call in the main process's app context; a database error is logged, or raised."""
        with self.app.app_context():
            try:
                return fn(*args)
            except SQLAlchemyError:
                db.session.rollback()
                if raise_errors:
                    raise
                log.warning("%s failed for %s", fn.__name__, args[0], exc_info=True)
                return None
            finally:
                db.session.remove()

    def maintain_heartbeats(self, job: RQJob, *args, **kwargs) -> None:
        """RQ's heartbeats, and the row's: the reconciler tells a live job from a dead one by it."""
        row_id = row_id_of(job)
        if row_id is not None:
            self._in_app(jobstate.heartbeat, row_id, f"{self.name}/{self.horse_pid}")
        try:
            super().maintain_heartbeats(job, *args, **kwargs)
        except RedisError:
            # The row's heartbeat went to PostgreSQL, so the job still looks alive; keep waiting.
            log.warning("could not reach Redis for RQ's heartbeat of job %s", job.id)

    def _note_horse_death(self, job: RQJob, retpid, ret_val, rusage) -> None:
        """RQ's work_horse_killed_handler: remember why the horse died, for the row (settled after monitoring)."""
        signal_no = os.WTERMSIG(ret_val) if ret_val and os.WIFSIGNALED(ret_val) else None
        if self._handing_back:
            self._death_reason = "Handed back while the worker shut down"
        elif signal_no == signal.SIGKILL:
            self._death_reason = "Interrupted: the work process was killed (out of memory or stopped)"
        else:
            self._death_reason = f"Interrupted: the work process died (exit status {ret_val})"

    def monitor_work_horse(self, job: RQJob, queue, *args, **kwargs) -> None:
        """Watch the horse; afterwards record its result, or make sure its row is not left 'running'."""
        try:
            super().monitor_work_horse(job, queue, *args, **kwargs)
        except RedisError:
            # Redis went away while the horse worked: the row does not need it. Wait for the
            # horse here, then record its result; the worker restarts once Redis is back.
            log.warning("lost Redis while job %s ran; waiting for its work process", job.id)
            if self.horse_pid:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.horse_pid, 0)
            self._settle(job, self._death_reason or STOPPED)
            raise
        self._settle(job, self._death_reason or STOPPED)

    def _settle(self, job: RQJob, reason: str) -> None:
        """Record the result the horse left on the row; if it left none, do not leave the row running."""
        row_id = row_id_of(job)
        if row_id is None or self._in_app(runtime.record_result, row_id, job.id):
            return
        self._settle_dead_horse(job, reason, count_attempt=not self._handing_back)

    def _settle_dead_horse(self, rq_job: RQJob, reason: str, *, count_attempt: bool) -> None:
        """If the row still says running for this delivery, cancel or interrupt it and clean up."""
        row_id = row_id_of(rq_job)
        if row_id is None:
            return
        with self.app.app_context():
            try:
                job = db.session.get(Job, row_id)
                if job is None or job.status != JobStatus.RUNNING.value or job.rq_job_id != rq_job.id:
                    return
                if jobstate.interrupt(row_id, reason, count_attempt=count_attempt) is not None:
                    RETRY_DUE.set()
                from jobs.runtime import scratch_dir_for

                shutil.rmtree(scratch_dir_for(row_id), ignore_errors=True)
            except Exception:  # noqa: BLE001 - the reconciler repairs what this misses
                log.exception("could not settle job %s after its work process died", row_id)
            finally:
                db.session.remove()

    def request_stop(self, signum, frame, *args, **kwargs) -> None:
        """Warm shutdown: let the running job finish for ``shutdown_grace`` seconds, then hand it back."""
        self.shutdown_requested = True
        if self.horse_pid and self._grace_timer is None:
            self._grace_timer = threading.Timer(self.shutdown_grace, self._hand_back)
            self._grace_timer.daemon = True
            self._grace_timer.start()
        super().request_stop(signum, frame, *args, **kwargs)

    def _hand_back(self) -> None:
        """Grace is over: stop the horse; its job goes back to the queue."""
        if self.horse_pid:
            log.warning("shutdown grace of %ss over; handing job back", self.shutdown_grace)
            self._handing_back = True
            self.kill_horse(signal.SIGKILL)


class ReconcilerThread(threading.Thread):
    """Runs the reconciler every few seconds in the worker's parent process, sooner when a retry falls due."""

    def __init__(self, app: Flask, every: float) -> None:
        super().__init__(name="reconciler", daemon=True)
        self.app = app
        self.every = every
        self.stopped = threading.Event()

    def run(self) -> None:
        """Reconcile until stopped; errors are logged, never fatal."""
        wait = 0.0  # the first pass at start: a restarted worker repairs what its predecessor left
        while True:
            RETRY_DUE.wait(wait)
            RETRY_DUE.clear()
            if self.stopped.is_set():
                return
            wait = self.every
            try:
                with self.app.app_context():
                    repairs = reconciler.reconcile_if_leader()
                    if repairs.redis_unreachable:
                        wait = OUTAGE_RECHECK_SECONDS  # hand over the moment Redis is back
                    due_in = reconciler.seconds_until_next_retry()
                    if due_in is not None:
                        # A short sleep past the due time; never a busy loop on an overdue row.
                        wait = min(wait, max(0.5, due_in + 0.1))
            except Exception:  # noqa: BLE001 - Redis or PostgreSQL away: try again soon
                log.warning("reconcile pass failed", exc_info=True)
                wait = OUTAGE_RECHECK_SECONDS
