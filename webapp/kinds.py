"""The kinds of background job: where each runs, how long it may take, how often it is tried.

Entry points are named by dotted path so the web process never imports worker code.
Queues come in two classes (docs/production.md, "Process layout"): interactive queues
hold work someone is waiting for, bulk queues hold fan-out work nobody watches second by
second. Interactive worker processes never take bulk work, so a newsletter or a 200-photo
upload can never make an export wait.
"""

from __future__ import annotations

from dataclasses import dataclass

# Priority order: a worker serving all queues always takes fast work first.
# Interactive: fast (short e-mails, self-tests), default (exports, reports), cpu (a photo someone
# is looking at). Bulk: bulk (newsletter fan-out and batches, imports), bulk_cpu (the rest of a
# multi-photo upload).
INTERACTIVE_QUEUES = ("fast", "default", "cpu")
BULK_QUEUES = ("bulk", "bulk_cpu")
QUEUES = INTERACTIVE_QUEUES + BULK_QUEUES
# The first photos of one upload are resized as interactive work (the user is looking at
# them); the ones after them go to bulk_cpu, so a big upload cannot hold up anyone's photo.
INTERACTIVE_PHOTOS_PER_UPLOAD = 3


@dataclass(frozen=True, kw_only=True)
class JobKind:
    """The policy for one kind of job."""

    name: str
    label: str
    func: str
    queue: str
    timeout: int
    max_attempts: int
    memory_mb: int | None = None


def describe_seconds(seconds: int) -> str:
    """A time limit as people say it: "45 seconds", "10 minutes"."""
    if seconds < 120:
        return f"{seconds} second" + ("s" if seconds != 1 else "")
    minutes = round(seconds / 60)
    return f"{minutes} minutes"


KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind(name="export_orders", label="Orders export", func="jobs.export_orders.export_orders_csv",
                queue="default", timeout=600, max_attempts=3, memory_mb=512),
        JobKind(name="resize_photo", label="Photo", func="jobs.resize_photo.resize_photo",
                queue="cpu", timeout=300, max_attempts=2, memory_mb=400),
        JobKind(name="sales_report", label="Sales report", func="jobs.sales_report.build_sales_report_pdf",
                queue="default", timeout=1800, max_attempts=2, memory_mb=600),
        JobKind(name="mail_report", label="Report e-mail", func="jobs.mail_report.mail_sales_report",
                queue="fast", timeout=300, max_attempts=5),
        JobKind(name="send_newsletter", label="Newsletter", func="jobs.newsletter.send_newsletter",
                queue="bulk", timeout=600, max_attempts=3),
        JobKind(name="newsletter_batch", label="Newsletter batch", func="jobs.newsletter.send_newsletter_batch",
                queue="bulk", timeout=900, max_attempts=6),
        JobKind(name="newsletter_test", label="Newsletter test", func="jobs.newsletter.send_test_newsletter",
                queue="fast", timeout=120, max_attempts=3),
        JobKind(name="import_subscribers", label="Subscriber import",
                func="jobs.import_subscribers.import_subscribers", queue="bulk", timeout=900, max_attempts=2),
        JobKind(name="selftest", label="Self-test", func="jobs.selftest.run_selftest",
                queue="fast", timeout=600, max_attempts=3, memory_mb=256),
        JobKind(name="prune_jobs", label="Retention prune", func="jobs.prune_jobs.prune_old_jobs",
                queue="default", timeout=1800, max_attempts=2),
        JobKind(name="zip_photos", label="Photos ZIP", func="jobs.zip_photos.zip_photos",
                queue="default", timeout=900, max_attempts=2, memory_mb=256),
    )
}


def get_kind(name: str) -> JobKind:
    """The policy for ``name``; KeyError for an unknown kind."""
    return KINDS[name]


def queue_for(kind: str, *, position_in_upload: int = 0) -> str:
    """The queue a new job of ``kind`` goes to: the one decision of which class of work it is.

    ``position_in_upload`` is the 0-based place of a photo in its multi-photo upload.
    """
    policy = get_kind(kind)
    if kind == "resize_photo" and position_in_upload >= INTERACTIVE_PHOTOS_PER_UPLOAD:
        return "bulk_cpu"
    return policy.queue


def timeout_for(kind: JobKind, overrides: dict[str, int]) -> int:
    """The time limit of ``kind`` in seconds, after the JOB_TIMEOUT_<KIND> settings."""
    return overrides.get(kind.name, kind.timeout)
