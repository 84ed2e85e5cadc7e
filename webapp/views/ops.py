"""Operations: /metrics for Prometheus and an admin page that answers "is the queue healthy?"."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, abort, redirect, render_template, url_for
from flask_login import current_user
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select
from wtforms import DecimalField, IntegerField
from wtforms.validators import NumberRange, Optional

from webapp import queueing
from webapp.access import admins_only
from webapp.charts import stacked_bars
from webapp.extensions import db
from webapp.forms import Form
from webapp.kinds import KINDS, QUEUES
from webapp.metrics import JobsCollector, queue_ages, queue_depths, refuse_scrape, worker_states
from webapp.models import JobEvent
from webapp.models.job import utcnow

bp = Blueprint("ops", __name__)

# The queue-depth rule: a queue this deep, or a job waiting this long, needs more workers.
STUCK_AFTER_SECONDS = 300


admin_required = admins_only("The operations pages are for administrators.")


class SelfTestForm(Form):
    """Parameters of a diagnostic job."""

    seconds = DecimalField("Seconds of work", default=5, validators=[Optional(), NumberRange(0, 600)])
    fail_attempts = IntegerField("Fail the first N attempts", default=0, validators=[Optional(), NumberRange(0, 5)])


@bp.get("/metrics")
def metrics():
    """Prometheus text format; see metrics.refuse_scrape for who may read it."""
    refusal = refuse_scrape()
    if refusal is not None:
        return refusal
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector())
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _hourly(now) -> list[tuple[str, int, int]]:
    """(hour, succeeded, failed) for the last 24 hours."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    hour = func.date_trunc("hour", JobEvent.at)
    rows = db.session.execute(
        select(hour, JobEvent.event, func.count())
        .where(JobEvent.at >= start, JobEvent.event.in_(["succeeded", "failed"]))
        .group_by(hour, JobEvent.event)
    ).all()
    counts: dict = {}
    for at, event, count in rows:
        counts[(at.replace(tzinfo=None), event)] = count
    points = []
    for i in range(24):
        slot = (start + timedelta(hours=i)).replace(tzinfo=None)
        points.append((slot.strftime("%H:00"), counts.get((slot, "succeeded"), 0), counts.get((slot, "failed"), 0)))
    return points


def _slowest(now) -> list[tuple[str, int, float, float]]:
    """(kind, runs, p50, p95) of finished jobs in the last 24 hours, slowest p95 first."""
    return [tuple(row) for row in db.session.execute(
        select(JobEvent.kind, func.count(),
               func.percentile_cont(0.5).within_group(JobEvent.seconds),
               func.percentile_cont(0.95).within_group(JobEvent.seconds))
        .where(JobEvent.at >= now - timedelta(hours=24), JobEvent.event.in_(["succeeded", "failed"]),
               JobEvent.seconds.is_not(None))
        .group_by(JobEvent.kind).order_by(func.percentile_cont(0.95).within_group(JobEvent.seconds).desc())
    )]


def stuck_hint(depths: dict[str, int] | None, ages: dict[str, float]) -> str | None:
    """Words for jobs that wait while no queue holds them (nothing to scale: the hand-over is stuck), or None.

    How many processes each class of work needs is said per class (templates/ops/_classes.html).
    """
    if depths is None:
        return None
    oldest = max(ages.values() or [0])
    if sum(depths.values()) == 0 and oldest > STUCK_AFTER_SECONDS:
        return (f"Jobs have waited {oldest / 60:.0f} min without being in any queue: no worker is handing them "
                "over. Check that at least one worker is running and can reach Redis.")
    return None


def rq_queue_url(queue: str) -> str:
    """rq-dashboard 0.9's page of a queue's waiting jobs: …/<instance>/view/jobs/<queue>/<registry>/<per_page>/<order>/<page>."""
    return f"/rq/0/view/jobs/{queue}/queued/20/asc/1"


def human_age(seconds: float) -> str:
    """A wait as people say it: '45 s', '12 min', '1 h 0 min', '2 d 3 h'."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours = seconds // 60, seconds // 3600
    if hours < 1:
        return f"{minutes} min"
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} d {hours % 24} h"


def _overview() -> dict:
    """Everything the operations page shows."""
    now = utcnow()
    depths = queue_depths()
    ages = queue_ages()
    workers = worker_states() if depths is not None else None
    hourly = _hourly(now)
    done = sum(good for _, good, _ in hourly)
    failed = sum(bad for _, _, bad in hourly)
    retried = db.session.scalar(select(func.count()).select_from(JobEvent).where(
        JobEvent.at >= now - timedelta(hours=24), JobEvent.event.in_(["retried", "interrupted"]))) or 0
    return {
        "queues": [{"name": q, "depth": (depths or {}).get(q), "age": ages.get(q, 0.0), "url": rq_queue_url(q),
                    "age_text": human_age(ages.get(q, 0.0))}
                   for q in QUEUES],
        "redis_up": depths is not None,
        "workers": workers or [],
        "chart": stacked_bars(hourly),
        "done": done,
        "failed": failed,
        "retried": retried,
        "failure_rate": (failed / (done + failed) * 100) if done + failed else 0.0,
        "slowest": _slowest(now),
        "hint": stuck_hint(depths, ages),
        "kinds": KINDS,
    }


@bp.get("/ops/")
@admin_required
def index():
    """The operations page."""
    return render_template("ops/index.html", form=SelfTestForm(), **_overview())


@bp.get("/ops/panel")
@admin_required
def panel():
    """The part of the page that refreshes itself every few seconds."""
    return render_template("ops/_panel.html", **_overview())


@bp.post("/ops/selftest")
@admin_required
def selftest():
    """Queue a diagnostic job and open its page."""
    form = SelfTestForm()
    if not form.validate_on_submit():
        abort(400, "Seconds must be 0-600 and failed attempts 0-5.")
    params = {"seconds": float(form.seconds.data or 0), "fail_attempts": int(form.fail_attempts.data or 0)}
    job = queueing.submit("selftest", current_user.id, params, f"Self-test ({params['seconds']:g} s)")
    return redirect(url_for("jobs.show", job_id=job.id), code=303)
