"""The kinds of background job: where each runs, how long it may take, how often it is tried.

Entry points are named by dotted path so the web process never imports worker code.
"""

from __future__ import annotations

from dataclasses import dataclass

# Priority order: a worker serving all queues always takes fast work first.
QUEUES = ("fast", "default", "cpu")


@dataclass(frozen=True)
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
        JobKind("export_orders", "Orders export", "jobs.export_orders.export_orders_csv", "default", 600, 3, 512),
        JobKind("resize_photo", "Photo", "jobs.resize_photo.resize_photo", "cpu", 300, 2, 400),
        JobKind("sales_report", "Sales report", "jobs.sales_report.build_sales_report_pdf", "default", 1800, 2, 600),
        JobKind("mail_report", "Report e-mail", "jobs.mail_report.mail_sales_report", "fast", 300, 5),
        JobKind("send_newsletter", "Newsletter", "jobs.newsletter.send_newsletter", "fast", 600, 3),
        JobKind("newsletter_batch", "Newsletter batch", "jobs.newsletter.send_newsletter_batch", "fast", 900, 6),
        JobKind("newsletter_test", "Newsletter test", "jobs.newsletter.send_test_newsletter", "fast", 120, 3),
        JobKind(
            "import_subscribers", "Subscriber import", "jobs.import_subscribers.import_subscribers", "default", 900, 2
        ),
        JobKind("selftest", "Self-test", "jobs.selftest.run_selftest", "fast", 600, 3, 256),
    )
}


def get_kind(name: str) -> JobKind:
    """The policy for ``name``; KeyError for an unknown kind."""
    return KINDS[name]


def timeout_for(kind: JobKind, overrides: dict[str, int]) -> int:
    """The time limit of ``kind`` in seconds, after the JOB_TIMEOUT_<KIND> settings."""
    return overrides.get(kind.name, kind.timeout)
