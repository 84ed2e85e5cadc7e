"""Newsletters: compose, preview, send a test, send to everyone, watch the send, read the report."""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import func, select
from werkzeug.exceptions import NotFound
from wtforms import SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length

from webapp import queueing
from webapp.access import job_or_404, visible
from webapp.extensions import db
from webapp.forms import Form
from webapp.models import Delivery, Newsletter, Subscriber
from webapp.models.job import TERMINAL
from webapp.newsletter_content import clean_name, personalise, render_body
from webapp.newsletter_stats import send_stats
from webapp.paging import page_number
from webapp.views.jobs import STOP_POLLING

bp = Blueprint("newsletters", __name__, url_prefix="/newsletters")

REPORT_PAGE = 100
# The preview is shown as this reader would see it when there is no subscriber yet.
SAMPLE_NAME = "Alex"


class NewsletterForm(Form):
    """Subject and body."""

    subject = StringField("Subject", validators=[InputRequired(message="Write a subject."), Length(max=200)])
    body_format = SelectField("Format", choices=[SelectChoice("markdown", "Markdown"),
                                                 SelectChoice("text", "Plain text")])
    body = TextAreaField("Body", validators=[InputRequired(message="Write the message."), Length(max=100_000)])


def newsletter_or_404(newsletter_id: int) -> Newsletter:
    """The newsletter if the current user may see it; 404 otherwise."""
    newsletter = db.session.get(Newsletter, newsletter_id)
    if newsletter is None or not current_user.can_see(newsletter.owner_id):
        abort(404, "No such newsletter.")
    return newsletter


def draft_or_redirect(newsletter_id: int) -> Newsletter | None:
    """The newsletter if it is still a draft; None (with a message) once it has been sent."""
    newsletter = newsletter_or_404(newsletter_id)
    if newsletter.send_job_id is not None:
        flash("This newsletter has been sent, so it can no longer be changed or deleted.", "warning")
        return None
    return newsletter


def sample_name() -> str:
    """A real subscriber's name for the preview (the first active one with a name), else a stand-in."""
    name = db.session.scalar(
        select(Subscriber.name).where(Subscriber.active, Subscriber.name != "").order_by(Subscriber.id).limit(1)
    )
    return clean_name(name) or SAMPLE_NAME


@bp.get("/")
@login_required
def index():
    """My newsletters and the subscriber count."""
    newsletters = db.session.scalars(
        visible(select(Newsletter), Newsletter.owner_id).order_by(Newsletter.created_at.desc()).limit(100)
    ).all()
    active = db.session.scalar(select(func.count()).select_from(Subscriber).where(Subscriber.active))
    return render_template("newsletters/index.html", newsletters=newsletters, active=active,
                           stats={n.id: send_stats(n) for n in newsletters})


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new():
    """Compose a newsletter; it is saved as a draft to preview before sending."""
    form = NewsletterForm()
    if not form.is_submitted():
        form.body.data = "Hello {{ name }},\n\nOur spring collection is here.\n\n— The team"
    if form.validate_on_submit():
        newsletter = Newsletter(owner_id=current_user.id, subject=form.subject.data.strip(), body=form.body.data,
                                body_format=form.body_format.data)
        db.session.add(newsletter)
        db.session.commit()
        return redirect(url_for("newsletters.show", newsletter_id=newsletter.id), code=303)
    return render_template("newsletters/new.html", form=form), (400 if form.errors else 200)


@bp.get("/<int:newsletter_id>")
@login_required
def show(newsletter_id: int):
    """Preview, test, send, and the live state of the send."""
    newsletter = newsletter_or_404(newsletter_id)
    name = sample_name()
    html, _text = personalise(*render_body(newsletter.body, newsletter.body_format), name)
    active = db.session.scalar(select(func.count()).select_from(Subscriber).where(Subscriber.active))
    test_job = _test_job(newsletter, request.args.get("test", ""))
    return render_template("newsletters/show.html", newsletter=newsletter, preview_html=html, active=active,
                           stats=send_stats(newsletter), sample_name=name, test_job=test_job)


def _test_job(newsletter: Newsletter, job_id: str):
    """The test-send job named in the page address, if it is this newsletter's and mine to see."""
    try:
        job = job_or_404(uuid.UUID(job_id))
    except (ValueError, NotFound):
        return None
    return job if job.kind == "newsletter_test" and job.params.get("newsletter_id") == newsletter.id else None


@bp.route("/<int:newsletter_id>/edit", methods=["GET", "POST"])
@login_required
def edit(newsletter_id: int):
    """Change a draft's subject, format or text."""
    newsletter = draft_or_redirect(newsletter_id)
    if newsletter is None:
        return redirect(url_for("newsletters.show", newsletter_id=newsletter_id), code=303)
    form = NewsletterForm(obj=newsletter)
    if form.validate_on_submit():
        newsletter.subject = form.subject.data.strip()
        newsletter.body, newsletter.body_format = form.body.data, form.body_format.data
        db.session.commit()
        flash("Draft saved.", "success")
        return redirect(url_for("newsletters.show", newsletter_id=newsletter.id), code=303)
    return render_template("newsletters/new.html", form=form, newsletter=newsletter), (400 if form.errors else 200)


@bp.post("/<int:newsletter_id>/delete")
@login_required
def delete(newsletter_id: int):
    """Delete a draft (a sent newsletter stays, with its delivery report)."""
    newsletter = draft_or_redirect(newsletter_id)
    if newsletter is None:
        return redirect(url_for("newsletters.show", newsletter_id=newsletter_id), code=303)
    db.session.delete(newsletter)
    db.session.commit()
    flash(f"Draft “{newsletter.subject}” deleted.", "info")
    return redirect(url_for("newsletters.index"), code=303)


@bp.get("/<int:newsletter_id>/test/<uuid:job_id>")
@login_required
def test_status(newsletter_id: int, job_id: uuid.UUID):
    """The polled line under 'Send a test to me' (286 once the test is sent or failed)."""
    newsletter = newsletter_or_404(newsletter_id)
    job = _test_job(newsletter, str(job_id))
    if job is None:
        abort(404, "No such test send.")
    body = render_template("newsletters/_test_status.html", newsletter=newsletter, test_job=job)
    return body, (STOP_POLLING if job.is_terminal else 200)


@bp.get("/<int:newsletter_id>/progress")
@login_required
def progress(newsletter_id: int):
    """The polled send-progress partial (286 once nothing more will change)."""
    newsletter = newsletter_or_404(newsletter_id)
    stats = send_stats(newsletter)
    body = render_template("newsletters/_progress.html", newsletter=newsletter, stats=stats)
    return body, (200 if stats.is_live else STOP_POLLING)


@bp.post("/<int:newsletter_id>/test")
@login_required
def send_test(newsletter_id: int):
    """Send the newsletter to me, as a test."""
    newsletter = newsletter_or_404(newsletter_id)
    job = queueing.submit("newsletter_test", current_user.id, {"newsletter_id": newsletter.id},
                          f"Test of “{newsletter.subject[:120]}”")
    return redirect(url_for("newsletters.show", newsletter_id=newsletter.id, test=job.id, _anchor="test-send"),
                    code=303)


@bp.post("/<int:newsletter_id>/send")
@login_required
def send(newsletter_id: int):
    """Send to every active subscriber, once."""
    newsletter = newsletter_or_404(newsletter_id)
    if newsletter.send_job_id is not None:
        flash("This newsletter has already been sent (or is sending).", "warning")
        return redirect(url_for("newsletters.show", newsletter_id=newsletter.id), code=303)
    job = queueing.submit("send_newsletter", current_user.id, {"newsletter_id": newsletter.id},
                          f"Newsletter “{newsletter.subject[:120]}”")
    newsletter.send_job_id = job.id
    db.session.commit()
    flash("Sending started.", "success")
    return redirect(url_for("newsletters.show", newsletter_id=newsletter.id), code=303)


@bp.post("/<int:newsletter_id>/cancel")
@login_required
def cancel(newsletter_id: int):
    """Stop the send: queued batches never start, running ones stop at their next message."""
    newsletter = newsletter_or_404(newsletter_id)
    from webapp.models import Job

    live = db.session.scalars(
        select(Job.id).where(
            (Job.parent_id == newsletter.send_job_id) | (Job.id == newsletter.send_job_id),
            Job.status.not_in([s.value for s in TERMINAL]),
        )
    ).all() if newsletter.send_job_id else []
    for job_id in live:
        queueing.cancel(job_id)
    flash("Stopping the send; what was sent stays recorded." if live else "Nothing is sending.", "info")
    return redirect(url_for("newsletters.show", newsletter_id=newsletter.id), code=303)


@bp.get("/<int:newsletter_id>/report")
@login_required
def report(newsletter_id: int):
    """The delivery report: counts, and each failed address with its SMTP error."""
    newsletter = newsletter_or_404(newsletter_id)
    page = page_number()
    failed = db.session.execute(
        select(Subscriber.email, Delivery.error).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.newsletter_id == newsletter.id, Delivery.status == "failed")
        .order_by(Subscriber.email).offset((page - 1) * REPORT_PAGE).limit(REPORT_PAGE + 1)
    ).all()
    return render_template("newsletters/report.html", newsletter=newsletter, stats=send_stats(newsletter),
                           failed=failed[:REPORT_PAGE], has_more=len(failed) > REPORT_PAGE, page=page)
