"""What the "job finished" toasts say, in a shop owner's words, and how several are grouped into one.

Pure wording: the view in webapp/views/jobs.py picks the jobs; this turns them into
short sentences with one link each. Titles are user text and stay plain strings
(the template escapes them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from flask import url_for

from webapp.extensions import db
from webapp.models import Job, Newsletter
from webapp.newsletter_stats import send_stats

# (one, many) in the words on the pages; kinds not listed use their label.
NOUNS = {
    "resize_photo": ("photo", "photos"),
    "export_orders": ("orders export", "orders exports"),
    "sales_report": ("sales report", "sales reports"),
    "mail_report": ("report e-mail", "report e-mails"),
    "send_newsletter": ("newsletter", "newsletters"),
    "newsletter_test": ("test e-mail", "test e-mails"),
    "import_subscribers": ("subscriber import", "subscriber imports"),
    "selftest": ("self-test", "self-tests"),
    "zip_photos": ("photo ZIP", "photo ZIPs"),
}


@dataclass
class Announcement:
    """One toast: a sentence, one link, a tone (success, error, info) and the jobs it stands for."""

    text: str
    href: str
    link: str
    tone: str
    job_ids: list[str] = field(default_factory=list)


def plural(count: int, one: str, many: str) -> str:
    """'1 photo', '4 photos'."""
    return f"{count:,} {one if count == 1 else many}"


def announce(jobs: Iterable[Job]) -> list[Announcement]:
    """One toast per kind and outcome: a single job in its own words, several as '4 photos ready'."""
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.kind, job.status), []).append(job)
    made = []
    for (kind, status), members in groups.items():
        made.append(_single(members[0]) if len(members) == 1 else _grouped(kind, status, members))
    return made


def _grouped(kind: str, status: str, jobs: list[Job]) -> Announcement:
    """'4 photos ready', '2 orders exports failed', linking to where they all are."""
    one, many = NOUNS.get(kind, (kind.replace("_", " "), kind.replace("_", " ") + "s"))
    what = plural(len(jobs), one, many)
    ids = [str(job.id) for job in jobs]
    if status == "succeeded":
        if kind == "resize_photo":
            return Announcement(f"{what} ready", url_for("photos.index"), "Open gallery", "success", ids)
        return Announcement(f"{what} ready", url_for("jobs.index", kind=kind), "Open", "success", ids)
    verb = "failed" if status == "failed" else "cancelled"
    return Announcement(f"{what} {verb}", url_for("jobs.index", kind=kind, status=status), "See which",
                        "error" if status == "failed" else "info", ids)


def _single(job: Job) -> Announcement:
    """One finished job, said the way its page says it."""
    one, _many = NOUNS.get(job.kind, (job.kind.replace("_", " "), ""))
    # The first letter only: str.capitalize() would turn "photo ZIP" into "Photo zip".
    subject = one[:1].upper() + one[1:]
    title = job.title or one
    page = url_for("jobs.show", job_id=job.id)
    ids = [str(job.id)]
    if job.status == "failed":
        return Announcement(f"{subject} “{title}” failed", page, "See why", "error", ids)
    if job.status == "cancelled":
        return Announcement(f"{subject} “{title}” was cancelled", page, "Open", "info", ids)
    result = job.result or {}
    if job.kind == "resize_photo":
        photo_id = result.get("photo_id")
        href = url_for("photos.show", photo_id=photo_id) if photo_id else page
        return Announcement(f"Photo “{title}” is ready", href, "View", "success", ids)
    if job.kind == "export_orders":
        rows = result.get("rows")
        text = f"Orders export is ready ({plural(rows, 'order', 'orders')})" if rows is not None else "Orders export is ready"
        return Announcement(text, page, "Download", "success", ids)
    if job.kind == "sales_report":
        return Announcement(f"{title} is ready", page, "Open", "success", ids)
    if job.kind == "zip_photos":
        photos = result.get("photos")
        text = f"Photo ZIP is ready ({plural(photos, 'photo', 'photos')})" if photos is not None else "Photo ZIP is ready"
        return Announcement(text, page, "Download", "success", ids)
    if job.kind == "mail_report":
        sent = len(result.get("sent_to", []))
        return Announcement(f"Sales report sent to {plural(sent, 'recipient', 'recipients')}", page, "Details",
                            "success", ids)
    if job.kind == "send_newsletter":
        return _newsletter_sent(job, title, page, ids)
    if job.kind == "newsletter_test":
        return Announcement("Test newsletter sent to you", page, "Details", "success", ids)
    if job.kind == "import_subscribers":
        return Announcement(f"Subscriber import finished: {result.get('summary', 'done')}", page, "Details",
                            "success", ids)
    return Announcement(f"{subject} “{title}” finished", page, "Open", "success", ids)


def _newsletter_sent(job: Job, title: str, page: str, ids: list[str]) -> Announcement:
    """'Newsletter “Spring sale” sent to 9,998 subscribers (2 failed)', with a link to its delivery report."""
    newsletter_id = (job.result or {}).get("newsletter_id")
    newsletter = db.session.get(Newsletter, newsletter_id) if newsletter_id else None
    if newsletter is None:
        return Announcement(f"Newsletter “{title}” sent", page, "Details", "success", ids)
    stats = send_stats(newsletter)
    text = f"Newsletter “{newsletter.subject}” sent to {plural(stats.sent, 'subscriber', 'subscribers')}"
    if stats.failed:
        text += f" ({stats.failed:,} failed)"
    return Announcement(text, url_for("newsletters.report", newsletter_id=newsletter.id), "Delivery report",
                        "error" if stats.failed and not stats.sent else "success", ids)
