"""PDF sales reports: choose a period, optionally e-mail the result, watch both steps on one page."""

from __future__ import annotations

from datetime import date, timedelta

from email_validator import EmailNotValidError, validate_email
from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user, login_required
from wtforms import StringField, TextAreaField
from wtforms.validators import Length, ValidationError

from webapp import queueing
from webapp.forms import OrderFilterForm

bp = Blueprint("reports", __name__, url_prefix="/reports")

MAX_RECIPIENTS = 10


def parse_recipients(raw: str) -> list[str]:
    """Split a comma/newline separated list into normalised addresses; ValueError names a bad one."""
    found: list[str] = []
    for part in raw.replace("\n", ",").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            address = validate_email(part, check_deliverability=False, test_environment=True).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"{part[:80]!r} is not a valid e-mail address ({exc})") from None
        if address not in found:
            found.append(address)
    return found


class ReportForm(OrderFilterForm):
    """Period, filters and optional recipients."""

    customer = StringField("Customer name contains", validators=[Length(max=100)])
    recipients = TextAreaField("E-mail the report to", validators=[Length(max=2000)])

    def validate_recipients(self, field: TextAreaField) -> None:
        """Every address must be valid, and not too many."""
        try:
            addresses = parse_recipients(field.data or "")
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if len(addresses) > MAX_RECIPIENTS:
            raise ValidationError(f"At most {MAX_RECIPIENTS} recipients.")


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new():
    """Show the report form; on a valid POST queue the report (and its e-mail) and open the job page."""
    form = ReportForm()
    if not form.is_submitted():
        today = date.today()
        form.date_from.data = today.replace(day=1) - timedelta(days=1)
        form.date_from.data = form.date_from.data.replace(day=1)
        form.date_to.data = today
    if form.validate_on_submit():
        params = {
            "date_from": form.date_from.data.isoformat(),
            "date_to": form.date_to.data.isoformat(),
            "status": form.status.data or None,
            "customer": (form.customer.data or "").strip() or None,
        }
        title = f"Sales report {params['date_from']} to {params['date_to']}"
        report = queueing.submit("sales_report", current_user.id, params, title)
        recipients = parse_recipients(form.recipients.data or "")
        if recipients:
            queueing.submit(
                "mail_report", current_user.id, {"report_job_id": str(report.id), "recipients": recipients},
                f"E-mail to {len(recipients)} recipient{'s' if len(recipients) != 1 else ''}", depends_on=report,
            )
        return redirect(url_for("jobs.show", job_id=report.id), code=303)
    return render_template("reports/new.html", form=form), (400 if form.errors else 200)
