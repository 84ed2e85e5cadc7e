"""Export orders to CSV: a form that submits a job and shows its page at once."""

from __future__ import annotations

from datetime import date, timedelta

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user, login_required

from webapp import submissions
from webapp.forms import OrderFilterForm

bp = Blueprint("exports", __name__, url_prefix="/exports")



class ExportForm(OrderFilterForm):
    """Which orders to export."""


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new():
    """Show the export form; on a valid POST, queue the export and go to its job page."""
    form = ExportForm()
    if not form.is_submitted():
        today = date.today()
        form.date_from.data = today - timedelta(days=30)
        form.date_to.data = today
    if form.validate_on_submit():
        params = {
            "date_from": form.date_from.data.isoformat(),
            "date_to": form.date_to.data.isoformat(),
            "status": form.status.data or None,
        }
        job = submissions.export_orders(current_user.id, params)
        return redirect(url_for("jobs.show", job_id=job.id), code=303)
    return render_template("exports/new.html", form=form), (400 if form.errors else 200)
