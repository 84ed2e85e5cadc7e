"""Schedules: list, create with a simple picker (or cron), edit, pause, resume, run now, delete;
newsletters sent at a chosen time."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from wtforms import IntegerField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from webapp import schedule_firing, schedule_params, schedule_rules, scheduling
from webapp.access import visible
from webapp.extensions import db
from webapp.forms import Form
from webapp.models import Schedule, ScheduleRun
from webapp.models.order import ORDER_STATUSES
from webapp.schedule_rules import PERIODS, RuleError
from webapp.views.newsletters import newsletter_or_404

bp = Blueprint("schedules", __name__, url_prefix="/schedules")

DEFAULT_TZ = "Europe/Berlin"
FREQUENCIES = [("daily", "Every day"), ("weekly", "Every week, on the days ticked"),
               ("monthly", "Every month, on day N"), ("cron", "Cron expression (for experts)")]
DAYS = [SelectChoice(d, label) for d, label in ((1, "Mon"), (2, "Tue"), (3, "Wed"), (4, "Thu"), (5, "Fri"), (6, "Sat"),
                                                 (0, "Sun"))]


class ScheduleForm(Form):
    """When (picker or cron, time zone) and what (the kind's own fields)."""

    frequency = SelectField("Repeat", choices=[SelectChoice(v, label) for v, label in FREQUENCIES])
    time = StringField("At (HH:MM)", default="07:00", validators=[Length(max=20)])
    weekdays = SelectMultipleField("On", choices=DAYS, coerce=int, default=[1],
                                   widget=ListWidget(prefix_label=False), option_widget=CheckboxInput())
    day = IntegerField("Day of the month", default=1, validators=[Optional(), NumberRange(1, 31)])
    cron = StringField("Cron expression", validators=[Length(max=120)])
    tz = StringField("Time zone", default=DEFAULT_TZ, validators=[Length(max=64)])
    grace_hours = IntegerField("Catch up a missed run within (hours)", default=6,
                               validators=[Optional(), NumberRange(0, 24 * 31)])
    period = SelectField("Period", choices=[SelectChoice(k, v) for k, v in PERIODS.items()], default="last_week")
    status = SelectField("Status", choices=[SelectChoice("", "Any status")]
                         + [SelectChoice(s, s.capitalize()) for s in ORDER_STATUSES])
    customer = StringField("Customer name contains", validators=[Length(max=100)])
    recipients = TextAreaField("E-mail the report to", validators=[Length(max=2000)])
    days = IntegerField("Keep finished jobs for (days)", validators=[Optional(), NumberRange(1, 3650)])

    def rule(self) -> str:
        """The cron expression this form describes; RuleError when it does not describe one."""
        if self.frequency.data == "cron":
            return schedule_rules.check_cron(self.cron.data or "")
        picked = schedule_rules.Picked(self.frequency.data, (self.time.data or "").strip(),
                                       list(self.weekdays.data or []), self.day.data or 0)
        return schedule_rules.compose(picked)

    def params(self, kind: str) -> dict:
        """The raw parameters for ``kind`` (checked by schedule_params.clean_params)."""
        if kind == "prune_jobs":
            return {"days": self.days.data}
        if kind == "selftest":
            return {}
        params = {"period": self.period.data, "status": self.status.data or None}
        if kind == "sales_report":
            params.update(customer=self.customer.data, recipients=self.recipients.data or "")
        return params

    def fill(self, schedule: Schedule) -> None:
        """Show an existing schedule in the form."""
        picked = schedule_rules.pick(schedule.cron or "")
        self.frequency.data, self.cron.data, self.tz.data = picked.frequency, schedule.cron, schedule.tz
        if picked.frequency != "cron":
            self.time.data, self.weekdays.data, self.day.data = picked.time, picked.weekdays or [1], picked.day
        self.grace_hours.data = schedule.grace_seconds // 3600
        params = schedule.params or {}
        self.period.data = params.get("period") or "last_week"
        self.status.data = params.get("status") or ""
        self.customer.data = params.get("customer") or ""
        self.recipients.data = ", ".join(params.get("recipients") or [])
        self.days.data = params.get("days")


def schedule_or_404(schedule_id: int) -> Schedule:
    """The schedule if the current user may see it; 404 otherwise."""
    schedule = db.session.get(Schedule, schedule_id)
    if schedule is None or not current_user.can_see(schedule.owner_id) or (schedule.system and not current_user.is_admin):
        abort(404, "No such schedule.")
    return schedule


def kind_or_404(kind: str) -> str:
    """A kind the current user may schedule from the form."""
    if kind not in schedule_params.SCHEDULABLE or kind == "send_newsletter":
        abort(404, "That cannot be scheduled.")
    if schedule_params.SCHEDULABLE[kind][1] and not current_user.is_admin:
        abort(404, "That cannot be scheduled.")
    return kind


@bp.get("/")
@login_required
def index():
    """Every schedule I may see; admins also see the system schedules."""
    stmt = visible(select(Schedule), Schedule.owner_id).order_by(Schedule.system, Schedule.next_run_at.nulls_last(),
                                                                 Schedule.id)
    schedules = db.session.scalars(stmt.limit(500)).all()
    return render_template("schedules/index.html", schedules=[s for s in schedules if not s.system],
                           system=[s for s in schedules if s.system] if current_user.is_admin else [])


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new():
    """Create a schedule for ?kind=export_orders|sales_report (admins: prune_jobs, selftest)."""
    kind = kind_or_404(request.values.get("kind", "export_orders"))
    form = ScheduleForm()
    error = None
    if not form.is_submitted() and kind == "prune_jobs":
        form.frequency.data, form.time.data, form.tz.data = "daily", "03:30", "UTC"
    if form.validate_on_submit():
        try:
            schedule = scheduling.create_schedule(kind, current_user.id, form.params(kind), form.rule(), form.tz.data,
                                                  grace_seconds=_grace(form))
        except RuleError as exc:
            error = str(exc)
        else:
            flash(f"Scheduled: {schedule_rules.describe(schedule.cron, schedule.tz)}.", "success")
            return redirect(url_for("schedules.show", schedule_id=schedule.id), code=303)
    return render_template("schedules/form.html", form=form, kind=kind, schedule=None, error=error,
                           zones=schedule_rules.zone_names()), (400 if error or form.errors else 200)


@bp.route("/<int:schedule_id>/edit", methods=["GET", "POST"])
@login_required
def edit(schedule_id: int):
    """Change a schedule's rule and parameters."""
    schedule = schedule_or_404(schedule_id)
    if schedule.is_one_shot:
        abort(404, "A scheduled newsletter is changed from its newsletter's page.")
    form = ScheduleForm()
    error = None
    if not form.is_submitted():
        form.fill(schedule)
    elif form.validate():
        try:
            scheduling.change_schedule(schedule, form.params(schedule.kind), form.rule(), form.tz.data,
                                       grace_seconds=_grace(form))
        except RuleError as exc:
            db.session.rollback()
            error = str(exc)
        else:
            flash("Schedule saved.", "success")
            return redirect(url_for("schedules.show", schedule_id=schedule.id), code=303)
    return render_template("schedules/form.html", form=form, kind=schedule.kind, schedule=schedule, error=error,
                           zones=schedule_rules.zone_names()), (400 if error or form.errors else 200)


def _grace(form: ScheduleForm) -> int | None:
    """The grace window in seconds, or None to keep the current one."""
    return None if form.grace_hours.data is None else form.grace_hours.data * 3600


@bp.get("/<int:schedule_id>")
@login_required
def show(schedule_id: int):
    """One schedule: its rule, next run, and the latest runs (missed ones too)."""
    schedule = schedule_or_404(schedule_id)
    runs = db.session.scalars(
        select(ScheduleRun).where(ScheduleRun.schedule_id == schedule.id).order_by(ScheduleRun.slot_at.desc()).limit(50)
    ).all()
    return render_template("schedules/show.html", schedule=schedule, runs=runs)


@bp.post("/<int:schedule_id>/pause")
@login_required
def pause(schedule_id: int):
    """Stop firing until resumed."""
    scheduling.pause(schedule_or_404(schedule_id).id, f"Paused by {current_user.email}")
    flash("Paused: it will not run until you resume it.", "info")
    return _back(schedule_id)


@bp.post("/<int:schedule_id>/resume")
@login_required
def resume(schedule_id: int):
    """Fire again from the next slot."""
    try:
        scheduling.resume(schedule_or_404(schedule_id).id)
        flash("Resumed.", "success")
    except RuleError as exc:
        flash(f"Cannot resume: {exc}", "error")
    return _back(schedule_id)


@bp.post("/<int:schedule_id>/run")
@login_required
def run_now(schedule_id: int):
    """Run once now and open the job."""
    try:
        jobs = schedule_firing.run_now(schedule_or_404(schedule_id).id)
    except RuleError as exc:
        flash(f"Cannot run it: {exc}", "error")
        return _back(schedule_id)
    return redirect(url_for("jobs.show", job_id=jobs[0].id), code=303)


@bp.post("/<int:schedule_id>/delete")
@login_required
def delete(schedule_id: int):
    """Delete the schedule (its past jobs stay in the job list)."""
    scheduling.delete_schedule(schedule_or_404(schedule_id).id)
    flash("Schedule deleted.", "info")
    return redirect(url_for("schedules.index"), code=303)


def _back(schedule_id: int):
    """Back to the schedule's page."""
    return redirect(url_for("schedules.show", schedule_id=schedule_id), code=303)


# --- newsletters at a chosen time --------------------------------------------------------------


@bp.post("/newsletter/<int:newsletter_id>")
@login_required
def schedule_newsletter(newsletter_id: int):
    """Send the newsletter at the date and time given, in the time zone given."""
    newsletter = newsletter_or_404(newsletter_id)
    tz = (request.form.get("tz") or DEFAULT_TZ).strip()
    try:
        when = datetime.strptime((request.form.get("send_at") or "").strip(), "%Y-%m-%dT%H:%M")
    except ValueError:
        flash("Choose a date and time to send it (YYYY-MM-DD HH:MM).", "error")
    else:
        try:
            schedule = scheduling.schedule_newsletter(newsletter, current_user.id, when, tz)
            flash(f"Scheduled for {local_time(schedule.run_at, tz)} ({tz}).", "success")
        except RuleError as exc:
            flash(str(exc), "error")
    return redirect(url_for("newsletters.show", newsletter_id=newsletter.id), code=303)


@bp.post("/newsletter/<int:newsletter_id>/cancel")
@login_required
def cancel_newsletter(newsletter_id: int):
    """Cancel a scheduled send that has not started."""
    newsletter = newsletter_or_404(newsletter_id)
    if scheduling.cancel_newsletter_send(newsletter.id):
        flash("The scheduled send is cancelled; the newsletter is a draft again.", "info")
    else:
        flash("Nothing to cancel: the send has already started (stop it with “Cancel the send”).", "warning")
    return redirect(url_for("newsletters.show", newsletter_id=newsletter.id), code=303)


# --- helpers for templates (the ops page and the newsletter page include our partials) ----------


@bp.app_template_filter("local_time")
def local_time(instant: datetime | None, tz: str) -> str:
    """An instant as wall-clock time in ``tz``: "2026-12-07 07:00 CET"."""
    if instant is None:
        return "—"
    return instant.astimezone(schedule_rules.zone(tz)).strftime("%Y-%m-%d %H:%M %Z")


@bp.app_context_processor
def schedule_helpers() -> dict:
    """Functions the schedule partials call, so the pages that include them need no change."""

    def next_schedule_runs(limit: int = 10) -> list[Schedule]:
        """The active schedules that run next."""
        return list(db.session.scalars(
            select(Schedule).where(Schedule.paused.is_(False), Schedule.next_run_at.is_not(None))
            .order_by(Schedule.next_run_at).limit(limit)
        ))

    return {"next_schedule_runs": next_schedule_runs, "pending_newsletter_send": scheduling.pending_newsletter_send,
            "missed_newsletter_send": scheduling.missed_newsletter_send,
            "describe_rule": schedule_rules.describe, "what_it_runs": schedule_params.what_it_runs}
