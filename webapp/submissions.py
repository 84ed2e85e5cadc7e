"""What an export or a report submission creates, shared by the forms and the schedules.

Each function takes ``make``, the way a job row comes to be: ``queueing.submit`` (commit
and hand to Redis at once: a person is waiting) from a view, ``jobstate.create`` (in the
caller's transaction, handed over after its commit) from the schedule clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from email_validator import EmailNotValidError, validate_email

from webapp import queueing
from webapp.models import Job

MAX_RECIPIENTS = 10

JobMaker = Callable[..., Job]


def parse_recipients(raw: str | list[str]) -> list[str]:
    """Split a comma/newline separated list into normalised addresses; ValueError names a bad one."""
    parts = raw if isinstance(raw, list) else raw.replace("\n", ",").replace(";", ",").split(",")
    found: list[str] = []
    for part in parts:
        part = str(part).strip()
        if not part:
            continue
        try:
            address = validate_email(part, check_deliverability=False, test_environment=True).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"{part[:80]!r} is not a valid e-mail address ({exc})") from None
        if address not in found:
            found.append(address)
    return found


def export_title(params: dict[str, Any]) -> str:
    """The title of an orders export someone asked for by hand."""
    return f"Orders {params['date_from']} to {params['date_to']}" + (
        f" ({params['status']})" if params.get("status") else ""
    )


def export_orders(owner_id: int, params: dict[str, Any], title: str | None = None, *,
                  make: JobMaker = queueing.submit) -> Job:
    """The export job for ``params`` (date_from, date_to, status)."""
    return make("export_orders", owner_id, params, title or export_title(params))


def report_title(params: dict[str, Any]) -> str:
    """The title of a sales report someone asked for by hand."""
    return f"Sales report {params['date_from']} to {params['date_to']}"


def sales_report(owner_id: int, params: dict[str, Any], recipients: list[str], title: str | None = None, *,
                 make: JobMaker = queueing.submit) -> list[Job]:
    """The report job for ``params`` and, with recipients, the e-mail job that waits for it."""
    report = make("sales_report", owner_id, params, title or report_title(params))
    jobs = [report]
    if recipients:
        jobs.append(make(
            "mail_report", owner_id, {"report_job_id": str(report.id), "recipients": recipients},
            f"E-mail to {len(recipients)} recipient{'s' if len(recipients) != 1 else ''}", depends_on=report,
        ))
    return jobs
