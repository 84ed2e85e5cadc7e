"""The retention prune as a job, so a system schedule can run it nightly instead of an external cron."""

from __future__ import annotations

from jobs.runtime import JobContext, job_entry
from webapp import retention


@job_entry
def prune_old_jobs(ctx: JobContext) -> dict:
    """Delete finished jobs older than ``days`` (default JOB_RETENTION_DAYS), their files and history."""
    days = ctx.params.get("days")
    counts = retention.prune(int(days) if days is not None else None)
    summary = ", ".join(f"{count} {what}" for what, count in counts.items()) + " deleted"
    return {"summary": summary, **counts}
