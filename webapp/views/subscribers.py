"""Subscribers: search, add, unsubscribe, re-subscribe, import a CSV (as a job), and the public unsubscribe link.

Who may do what: the subscriber list is personal data, so listing, searching, adding,
importing, unsubscribing someone by hand and putting an unsubscribed address back (with a
recorded reason) are for administrators. Staff (every other
account) write and send newsletters, which reach the active subscribers without showing
them the list. The unsubscribe link in each newsletter needs no account.
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.file import FileField, FileRequired
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from wtforms import EmailField, StringField
from wtforms.validators import InputRequired, Length, ValidationError

from webapp import queueing, storage
from webapp.access import admins_only
from webapp.extensions import csrf, db
from webapp.forms import Form
from webapp.models import Subscriber
from webapp.models.job import utcnow
from webapp.newsletter_content import clean_name, read_unsubscribe_token
from webapp.paging import page_number

bp = Blueprint("subscribers", __name__)

PAGE = 50


admin_required = admins_only("The subscriber list is for administrators.")


class SubscriberForm(Form):
    """One address and an optional name."""

    email = EmailField("E-mail", validators=[InputRequired(message="Enter an e-mail address."), Length(max=254)])
    name = StringField("Name", validators=[Length(max=200)])

    def validate_email(self, field: EmailField) -> None:
        """A syntactically valid address (no DNS look-ups)."""
        try:
            field.data = validate_email(field.data.strip(), check_deliverability=False,
                                        test_environment=True).normalized
        except EmailNotValidError as exc:
            raise ValidationError(str(exc)) from None


class ResubscribeForm(Form):
    """Why an address that asked to hear no more is put back on the list."""

    reason = StringField("Reason", validators=[
        InputRequired(message="Say why this address is re-subscribed."),
        Length(max=200, message="Keep the reason under 200 characters."),
    ])

    def validate_reason(self, field: StringField) -> None:
        """Spaces alone are no reason; control characters and line breaks are folded away."""
        field.data = clean_name(field.data)
        if not field.data:
            raise ValidationError("Say why this address is re-subscribed.")


class ImportForm(Form):
    """A CSV file of addresses."""

    csv_file = FileField("CSV file", validators=[FileRequired(message="Choose a CSV file.")])


@bp.get("/subscribers/")
@admin_required
def index():
    """Search and list subscribers."""
    q = (request.args.get("q") or "").strip()[:100]
    page = page_number()
    stmt = select(Subscriber)
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
        stmt = stmt.where(or_(Subscriber.email.ilike(like), Subscriber.name.ilike(like)))
    rows = db.session.scalars(stmt.order_by(Subscriber.id.desc()).offset((page - 1) * PAGE).limit(PAGE + 1)).all()
    counts = dict(db.session.execute(select(Subscriber.active, func.count()).group_by(Subscriber.active)).all())
    return render_template("subscribers/index.html", subscribers=rows[:PAGE], has_more=len(rows) > PAGE, page=page,
                           q=q, form=SubscriberForm(), import_form=ImportForm(),
                           active=counts.get(True, 0), inactive=counts.get(False, 0))


@bp.post("/subscribers/")
@admin_required
def add():
    """Add one subscriber (or re-activate an unsubscribed address)."""
    form = SubscriberForm()
    if not form.validate_on_submit():
        for errors in form.errors.values():
            for error in errors:
                flash(error, "error")
        return redirect(url_for("subscribers.index"), code=303)
    existing = db.session.scalar(select(Subscriber).where(func.lower(Subscriber.email) == form.email.data.lower()))
    if existing is not None and not existing.active:
        flash(f"{existing.email} unsubscribed earlier: use Re-subscribe on their row and say why.", "warning")
        return redirect(url_for("subscribers.index", q=existing.email), code=303)
    if existing is not None:
        flash(f"{existing.email} is already on the list.", "warning")
        return redirect(url_for("subscribers.index", q=existing.email), code=303)
    db.session.add(Subscriber(email=form.email.data, name=(form.name.data or "").strip()))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        flash(f"{form.email.data} is already on the list.", "warning")
    else:
        flash(f"{form.email.data} added.", "success")
    return redirect(url_for("subscribers.index"), code=303)


@bp.post("/subscribers/<int:subscriber_id>/unsubscribe")
@admin_required
def unsubscribe_by_staff(subscriber_id: int):
    """Unsubscribe someone on their behalf."""
    subscriber = db.session.get(Subscriber, subscriber_id) or abort(404, "No such subscriber.")
    subscriber.active = False
    subscriber.unsubscribed_at = utcnow()
    db.session.commit()
    flash(f"{subscriber.email} will get no more newsletters.", "info")
    # Back to the list as it was (search and page come with the form); never to a Referer, which
    # another site could have set to anywhere.
    page = request.form.get("page", 1, type=int) or 1
    return redirect(url_for("subscribers.index", q=(request.form.get("q") or "")[:100] or None,
                            page=page if 1 < page <= 1_000_000 else None), code=303)


@bp.route("/subscribers/<int:subscriber_id>/resubscribe", methods=["GET", "POST"])
@admin_required
def resubscribe(subscriber_id: int):
    """Put an unsubscribed address back on the list, recording who did it, when and why."""
    subscriber = db.session.get(Subscriber, subscriber_id) or abort(404, "No such subscriber.")
    if subscriber.active:
        flash(f"{subscriber.email} is already subscribed.", "info")
        return redirect(url_for("subscribers.index", q=subscriber.email), code=303)
    form = ResubscribeForm()
    if form.validate_on_submit():
        subscriber.active = True
        subscriber.resubscribed_at = utcnow()
        subscriber.resubscribed_by_id = current_user.id
        subscriber.resubscribe_reason = form.reason.data
        db.session.commit()
        flash(f"{subscriber.email} is subscribed again.", "success")
        return redirect(url_for("subscribers.index", q=subscriber.email), code=303)
    return (render_template("subscribers/resubscribe.html", subscriber=subscriber, form=form),
            400 if form.errors else 200)


@bp.post("/subscribers/import")
@admin_required
def import_csv():
    """Store the uploaded CSV and import it in the background."""
    form = ImportForm()
    if not form.validate_on_submit():
        flash("Choose a CSV file to import.", "error")
        return redirect(url_for("subscribers.index"), code=303)
    upload = form.csv_file.data
    upload.stream.seek(0, 2)
    size = upload.stream.tell()
    upload.stream.seek(0)
    limit_mb = current_app.config["IMPORT_MAX_MB"]
    if size > limit_mb * 1024 * 1024:
        flash(f"That file is over {limit_mb} MB.", "error")
        return redirect(url_for("subscribers.index"), code=303)
    name = storage.safe_filename(upload.filename or "subscribers.csv")
    stored = storage.store_stream(current_user.id, upload.stream, name, "text/csv")
    db.session.commit()
    job = queueing.submit("import_subscribers", current_user.id, {"file_id": str(stored.id)}, f"Import {name}")
    return redirect(url_for("jobs.show", job_id=job.id), code=303)


@bp.route("/u/<token>", methods=["GET", "POST"])
@csrf.exempt
def unsubscribe(token: str):
    """The link in every newsletter: GET asks to confirm, POST (or a mail client's one-click POST) unsubscribes."""
    try:
        subscriber_id, _newsletter_id = read_unsubscribe_token(current_app.config["SECRET_KEY"], token)
    except Exception:  # noqa: BLE001 - any bad token gets the same answer
        abort(404, "This unsubscribe link is not valid.")
    subscriber = db.session.get(Subscriber, subscriber_id)
    if subscriber is None:
        abort(404, "This unsubscribe link is not valid.")
    if request.method == "POST":
        if subscriber.active:
            subscriber.active = False
            subscriber.unsubscribed_at = utcnow()
            db.session.commit()
        return render_template("subscribers/unsubscribed.html", subscriber=subscriber)
    return render_template("subscribers/unsubscribe.html", subscriber=subscriber, token=token)
