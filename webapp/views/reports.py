"""PDF sales reports: choose a period, optionally e-mail the result, watch both steps on one page."""

from __future__ import annotations

from datetime import date, timedelta

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user, login_required
from wtforms import StringField, TextAreaField
from wtforms.validators import Length, ValidationError

from webapp import submissions
from webapp.forms import OrderFilterForm
from webapp.submissions import MAX_RECIPIENTS, parse_recipients

bp = Blueprint("reports", __name__, url_prefix="/reports")


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
        report = submissions.sales_report(current_user.id, params, parse_recipients(form.recipients.data or ""))[0]
        return redirect(url_for("jobs.show", job_id=report.id), code=303)
    return render_template("reports/new.html", form=form), (400 if form.errors else 200)
