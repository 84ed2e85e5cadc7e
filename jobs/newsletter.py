"""Newsletter sending: fan-out into batches, batches over one SMTP connection each, test sends.

Exactly once per subscriber: a delivery row per (newsletter, subscriber) with a
unique constraint is created before any sending; a batch sends only rows still
``pending`` and marks each ``sent`` the moment the SMTP server accepts it. A
retried or duplicated batch therefore skips what was sent; only the one message
in flight when a worker dies can be ambiguous (see docs/reliability.md).
"""

from __future__ import annotations

import logging

from flask import current_app
from flask_mail import Message
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from jobs.errors import JobFailed, TransientError
from jobs.runtime import JobContext, job_entry
from jobs.smtp_delivery import RateLimiter, TransientSMTPError, build_message, send_batch
from webapp import queueing
from webapp.extensions import db, mail
from webapp.links import external_url
from webapp.models import Delivery, DeliveryStatus, Job, Newsletter, Subscriber, User
from webapp.models.job import utcnow
from webapp.newsletter_content import email_html, email_text, make_unsubscribe_token, personalise, render_body

log = logging.getLogger(__name__)


def _newsletter(ctx: JobContext) -> Newsletter:
    """The newsletter named in the job's params."""
    newsletter = db.session.get(Newsletter, int(ctx.params["newsletter_id"]))
    if newsletter is None:
        raise JobFailed("The newsletter was deleted.")
    return newsletter


def _unsubscribe_urls(subscriber_id: int, newsletter_id: int | None) -> tuple[str, str]:
    """The page link and the one-click POST link for a subscriber."""
    token = make_unsubscribe_token(current_app.config["SECRET_KEY"], subscriber_id, newsletter_id)
    url = external_url("subscribers.unsubscribe", token=token)
    return url, url


def _message(sender: str, to_email: str, to_name: str, subject: str, body_html: str, body_text: str,
             page_url: str, post_url: str) -> Message:
    """One subscriber's message: the HTML part in the e-mail template, both parts ending with the unsubscribe link."""
    return build_message(
        sender=sender, to_email=to_email, to_name=to_name, subject=subject,
        html=email_html(body_html, subject=subject, to_email=to_email, unsubscribe_url=page_url),
        text=email_text(body_text, page_url),
        # The footers are in place already; build_message adds only the one-click headers.
        unsubscribe_url="", unsubscribe_post_url=post_url,
    )


@job_entry
def send_newsletter(ctx: JobContext) -> dict:
    """Create one delivery row per active subscriber and queue a batch job per batch."""
    newsletter = _newsletter(ctx)
    batch_size = max(1, int(current_app.config["NEWSLETTER_BATCH_SIZE"]))
    ctx.progress(0, None, "Preparing deliveries", force=True)
    db.session.execute(
        text("""
            INSERT INTO deliveries (newsletter_id, subscriber_id, batch_no, status)
            SELECT :nid, s.id, (row_number() OVER (ORDER BY s.id) - 1) / :size, 'pending'
            FROM subscribers s
            WHERE s.active AND NOT EXISTS (
                SELECT 1 FROM deliveries d WHERE d.newsletter_id = :nid AND d.subscriber_id = s.id)
            ON CONFLICT ON CONSTRAINT uq_delivery_once DO NOTHING
        """),
        {"nid": newsletter.id, "size": batch_size},
    )
    db.session.commit()
    batches = db.session.scalars(
        select(Delivery.batch_no).where(Delivery.newsletter_id == newsletter.id,
                                        Delivery.status == DeliveryStatus.PENDING.value)
        .distinct().order_by(Delivery.batch_no)
    ).all()
    parent = db.session.get(Job, ctx.job_id)
    existing = {
        job.params.get("batch_no")
        for job in db.session.scalars(select(Job).where(Job.parent_id == ctx.job_id, Job.kind == "newsletter_batch"))
    }
    queued = 0
    for batch_no in batches:
        if batch_no in existing:
            continue
        queueing.submit("newsletter_batch", ctx.owner_id, {"newsletter_id": newsletter.id, "batch_no": batch_no},
                        f"{newsletter.subject[:150]} — batch {batch_no + 1}", parent=parent)
        queued += 1
    total = db.session.scalar(
        select(db.func.count()).select_from(Delivery).where(Delivery.newsletter_id == newsletter.id)
    )
    return {"newsletter_id": newsletter.id, "batches": len(batches), "recipients": total,
            "summary": f"{total:,} recipients in {len(batches)} batches handed to the mail workers"}


@job_entry
def send_newsletter_batch(ctx: JobContext) -> dict:
    """Send one batch's pending deliveries over one SMTP connection."""
    newsletter = _newsletter(ctx)
    newsletter_id, subject = newsletter.id, newsletter.subject
    batch_no = int(ctx.params["batch_no"])
    sender = current_app.config["MAIL_DEFAULT_SENDER"]
    html, plain = render_body(newsletter.body, newsletter.body_format)
    rows = db.session.execute(
        select(Delivery.id, Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.active)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.newsletter_id == newsletter_id, Delivery.batch_no == batch_no,
               Delivery.status == DeliveryStatus.PENDING.value)
        .order_by(Delivery.id)
    ).all()
    db.session.commit()
    total = len(rows)
    done = {"sent": 0, "failed": 0}

    with DeliveryMarks() as marks:

        def messages():
            for delivery_id, subscriber_id, email, name, active in rows:
                if not active:
                    marks.record(delivery_id, DeliveryStatus.SKIPPED, "unsubscribed before sending")
                    continue
                page_url, post_url = _unsubscribe_urls(subscriber_id, newsletter_id)
                body_html, body_text = personalise(html, plain, name)
                yield delivery_id, _message(sender, email, name, subject, body_html, body_text, page_url, post_url)

        def on_sent(delivery_id: int) -> None:
            marks.record(delivery_id, DeliveryStatus.SENT)
            done["sent"] += 1
            ctx.progress(done["sent"] + done["failed"], total, "Sending")

        def on_failed(delivery_id: int, error: str) -> None:
            marks.record(delivery_id, DeliveryStatus.FAILED, error)
            done["failed"] += 1

        limiter = None
        rate = float(current_app.config["NEWSLETTER_RATE_PER_SECOND"])
        if rate > 0:
            limiter = RateLimiter(queueing.redis_conn(), "backhaul:newsletter-rate", rate)
        try:
            send_batch(mail, messages(), on_sent=on_sent, on_failed=on_failed, rate_limiter=limiter,
                       check_cancelled=ctx.check_cancelled)
        except TransientSMTPError as exc:
            raise TransientError(f"Mail server unavailable after {done['sent']} sent in this batch: {exc}") from exc
    return {"sent": done["sent"], "failed": done["failed"],
            "summary": f"Batch {batch_no + 1}: {done['sent']} sent, {done['failed']} failed"}


class DeliveryMarks:
    """Records what happened to each delivery, each mark committed before the next message goes out.

    This is the exactly-once boundary. The marks go over one connection of their own in
    autocommit mode: one round trip per mark, no transaction left open while a slow SMTP
    server answers. ``synchronous_commit`` is off for that connection: a commit costs
    microseconds instead of an fsync, and the mark is visible to every other session at
    once, so a killed worker still never re-sends it; only a crash of the PostgreSQL
    server itself could forget the last fraction of a second of marks.
    """

    STATEMENT = text(
        "UPDATE deliveries SET status = :status, error = :error, sent_at = :sent_at "
        "WHERE id = :id AND status = 'pending'"
    )

    def __enter__(self) -> DeliveryMarks:
        self.connection = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.connection.execute(text("SET synchronous_commit TO off"))
        return self

    def record(self, delivery_id: int, status: DeliveryStatus, error: str | None = None) -> None:
        """Mark one still-pending delivery ``status`` (with the server's words for a failure)."""
        self.connection.execute(self.STATEMENT, {
            "id": delivery_id, "status": status.value, "error": (error or None) and error[:500],
            "sent_at": utcnow() if status == DeliveryStatus.SENT else None,
        })

    def __exit__(self, *exc_info) -> None:
        try:
            self.connection.execute(text("RESET synchronous_commit"))
        except SQLAlchemyError:
            self.connection.invalidate()  # broken: never handed to anyone else
        self.connection.close()


@job_entry
def send_test_newsletter(ctx: JobContext) -> dict:
    """Send the newsletter once to its author, marked as a test."""
    newsletter = _newsletter(ctx)
    owner = db.session.get(User, ctx.owner_id)
    if owner is None:
        raise JobFailed("The account that asked for this test no longer exists.")
    html, plain = render_body(newsletter.body, newsletter.body_format)
    body_html, body_text = personalise(html, plain, owner.email.split("@")[0])
    page_url = external_url("newsletters.show", newsletter_id=newsletter.id)
    message = _message(current_app.config["MAIL_DEFAULT_SENDER"], owner.email, "", f"[TEST] {newsletter.subject}",
                       body_html, body_text, page_url, page_url)
    failures: list[str] = []
    try:
        send_batch(mail, [(owner.email, message)], on_sent=lambda _key: None,
                   on_failed=lambda _key, error: failures.append(error))
    except TransientSMTPError as exc:
        raise TransientError(f"Mail server unavailable: {exc}") from exc
    if failures:
        raise JobFailed(f"The mail server refused {owner.email}: {failures[0]}")
    return {"summary": f"Test sent to {owner.email}"}
