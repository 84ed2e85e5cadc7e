"""E-mail a finished sales report to its recipients (runs only after the report succeeded).

Each recipient gets their own message over one SMTP connection. Who has been sent
the report is saved on the job row as it happens, so a retried job sends nothing
twice. Reports over REPORT_ATTACH_MAX_MB go as a link instead of an attachment.
"""

from __future__ import annotations

import logging
import smtplib
import uuid

from flask import current_app
from flask_mail import Message

from jobs.errors import JobFailed, TransientError
from jobs.runtime import JobContext, job_entry
from webapp import jobstate, storage
from webapp.extensions import db, mail
from webapp.links import external_url
from webapp.models import Job, JobStatus, StoredFile
from webapp.newsletter_content import safe_header

log = logging.getLogger(__name__)


def _report_file(report: Job) -> StoredFile:
    """The PDF the report job produced."""
    stored = db.session.get(StoredFile, uuid.UUID(report.result["file_id"])) if report.result else None
    if stored is None:
        raise JobFailed("The report file is gone (it may have been pruned).")
    return stored


def _message(report: Job, stored: StoredFile, recipient: str, attach: bool) -> Message:
    """The e-mail for one recipient."""
    period = f"{report.params['date_from']} to {report.params['date_to']}"
    subject = safe_header(f"Sales report {period}")
    lines = ["Hello,", "", f"The sales report for {period} is ready: {(report.result or {}).get('summary', '')}."]
    if attach:
        lines.append("It is attached to this message.")
    else:
        link = external_url("files.download", file_id=stored.id)
        lines.append(f"It is too large to attach ({stored.size / 1024 / 1024:.1f} MB); download it here "
                     f"(you will be asked to log in): {link}")
    lines += ["", "— Backhaul"]
    msg = Message(subject=subject, recipients=[recipient], body="\n".join(lines))
    if attach:
        data = b"".join(storage.iter_file(stored))
        msg.attach(stored.name, "application/pdf", data)
    return msg


@job_entry
def mail_sales_report(ctx: JobContext) -> dict:
    """Send the report named in ctx.params to each recipient not yet sent to."""
    report = db.session.get(Job, uuid.UUID(ctx.params["report_job_id"]))
    if report is None or report.status != JobStatus.SUCCEEDED.value:
        raise JobFailed("The report did not succeed, so nothing was sent.")
    stored = _report_file(report)
    attach = stored.size <= current_app.config["REPORT_ATTACH_MAX_MB"] * 1024 * 1024
    recipients: list[str] = ctx.params["recipients"]
    row = db.session.get(Job, ctx.job_id)
    sent: list[str] = list(((row.result if row else None) or {}).get("sent_to", []))
    todo = [r for r in recipients if r not in sent]
    ctx.progress(len(sent), len(recipients), "Sending", force=True)
    try:
        with mail.connect() as conn:
            for recipient in todo:
                conn.send(_message(report, stored, recipient, attach))
                sent.append(recipient)
                jobstate.save_partial_result(ctx.job_id, {"sent_to": sent})
                ctx.progress(len(sent), len(recipients), "Sending")
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {addr: code for addr, (code, _msg) in exc.recipients.items()}
        if all(code >= 500 for code in codes.values()):
            raise JobFailed(f"The mail server refused {', '.join(codes)}.") from exc
        raise TransientError(f"The mail server deferred the message ({exc}).") from exc
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise TransientError(f"Could not reach the mail server ({type(exc).__name__}: {exc}).") from exc
    how = "attached" if attach else "as a link"
    return {"sent_to": sent, "summary": f"Report e-mailed ({how}) to {len(sent)} recipient"
            + ("s" if len(sent) != 1 else "")}
