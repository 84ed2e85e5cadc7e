"""The job list, job pages, the polled status partial, cancel, retry and announcements."""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import func, select, update
from sqlalchemy.orm import selectinload

from webapp import queueing
from webapp.access import job_or_404, visible
from webapp.announcements import announce
from webapp.extensions import db
from webapp.kinds import KINDS
from webapp.models import Job, JobStatus
from webapp.models.job import TERMINAL, utcnow
from webapp.paging import page_number

bp = Blueprint("jobs", __name__, url_prefix="/jobs")

PAGE_SIZE = 50
# htmx stops polling when the answer has this status code.
STOP_POLLING = 286
# A job page polls every second; for a job's first 2 s static/js/app.js also asks every 150 ms,
# so a half-second export shows its link at once while a page left open costs no more than before.
FAST_POLL_SECONDS = 2.0


def _wants_json() -> bool:
    """True when the client asked for JSON rather than a page."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


@bp.get("/")
@login_required
def index():
    """My jobs (everyone's for an admin), newest first, filterable by kind and status."""
    kind = request.args.get("kind", "")
    status = request.args.get("status", "")
    page = page_number()
    stmt = visible(select(Job), Job.owner_id).where(Job.parent_id.is_(None))
    if current_user.is_admin:
        stmt = stmt.options(selectinload(Job.owner))
    if kind in KINDS:
        stmt = stmt.where(Job.kind == kind)
    if status in {s.value for s in JobStatus}:
        stmt = stmt.where(Job.status == status)
    rows = db.session.scalars(
        stmt.order_by(Job.created_at.desc()).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)
    ).all()
    template = "jobs/_table.html" if request.headers.get("HX-Request") else "jobs/index.html"
    return render_template(
        template, jobs=rows[:PAGE_SIZE], has_more=len(rows) > PAGE_SIZE, page=page,
        kind=kind, status=status, kinds=KINDS, statuses=[s.value for s in JobStatus],
    )


@bp.get("/<uuid:job_id>")
@login_required
def show(job_id: uuid.UUID):
    """The job page (or the row as JSON for ``Accept: application/json``)."""
    job = job_or_404(job_id)
    if _wants_json():
        return jsonify(_with_download_urls(job.to_dict()))
    if request.headers.get("HX-Request"):
        return status(job_id)
    return render_template("jobs/show.html", job=job, steps=_steps(job), fast_poll_ms=_fast_poll_ms(job))


def _with_download_urls(row: dict) -> dict:
    """The job's JSON with an absolute download URL beside each file id in its result."""
    result = row.get("result")
    if isinstance(result, dict):
        files = {key: value for key, value in result.items() if key.endswith("file_id") and value}
        if files:
            row["downloads"] = {key.removesuffix("_id") or "file": url_for("files.download", file_id=value,
                                                                        _external=True)
                                for key, value in files.items()}
            row["download_url"] = next(iter(row["downloads"].values()))
    return row


@bp.get("/<uuid:job_id>/status")
@login_required
def status(job_id: uuid.UUID):
    """The partial that the job page polls; answers 286 once the job is finished."""
    job = job_or_404(job_id)
    steps = _steps(job)
    body = render_template("jobs/_status.html", job=job, steps=steps, fast_poll_ms=_fast_poll_ms(job))
    live = any(not step.is_terminal for step in steps)
    if not live and job.owner_id == current_user.id and job.announced_at is None:
        # The owner watched it finish here: no toast for it elsewhere.
        job.announced_at = utcnow()
        db.session.commit()
    return body, (200 if live else STOP_POLLING)


def _fast_poll_ms(job: Job) -> int:
    """How much longer (ms) the page should poll quickly: the rest of the job's first seconds, else 0."""
    age = (utcnow() - job.created_at).total_seconds()
    return max(0, int((FAST_POLL_SECONDS - age) * 1000))


def _steps(job: Job) -> list[Job]:
    """The job and the jobs that follow it (a report and its e-mail), as one unit."""
    followers = db.session.scalars(
        select(Job).where(Job.depends_on_id == job.id).order_by(Job.created_at)
    ).all()
    return [job, *followers]


@bp.post("/<uuid:job_id>/cancel")
@login_required
def cancel(job_id: uuid.UUID):
    """Cancel a queued or running job."""
    job = job_or_404(job_id)
    if queueing.cancel(job.id) is None:
        flash("That job has already finished.", "warning")
    else:
        flash("Cancelled." if job.status == JobStatus.CANCELLED.value else "Cancelling…", "info")
    return _back_to(job)


@bp.post("/<uuid:job_id>/retry")
@login_required
def retry(job_id: uuid.UUID):
    """Queue a failed or cancelled job again."""
    job = job_or_404(job_id)
    if queueing.retry(job.id) is None:
        flash("Only a failed or cancelled job can be retried.", "warning")
    else:
        flash("Queued again.", "success")
    return _back_to(job)


def _back_to(job: Job):
    """After an action: the fresh status partial for HTMX, else the job page."""
    if request.headers.get("HX-Request"):
        db.session.expire_all()
        return status(job.id)
    return redirect(url_for("jobs.show", job_id=job.id), code=303)


@bp.get("/announcements")
@login_required
def announcements():
    """Toasts for my jobs that finished since I last heard, grouped, each job announced once.

    Jobs the page already shows (``on_screen``, sent by static/js/notices.js) are marked as heard
    without a toast; a newsletter is announced when its last batch is sent, not when it is handed over.
    """
    on_screen = _job_ids(request.args.get("on_screen", ""))
    finished = db.session.scalars(
        select(Job).where(
            Job.owner_id == current_user.id,
            Job.parent_id.is_(None),
            Job.status.in_([s.value for s in TERMINAL]),
            Job.announced_at.is_(None),
            Job.finished_at > utcnow() - timedelta(hours=1),
        ).order_by(Job.finished_at).limit(50)
    ).all()
    done = [job for job in finished if not _still_sending(job)]
    if done:
        db.session.execute(
            update(Job).where(Job.id.in_([j.id for j in done])).values(announced_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
    toasts = announce(job for job in done if job.id not in on_screen)
    return render_template("jobs/_announcements.html", announcements=toasts)


def _job_ids(text: str) -> set[uuid.UUID]:
    """The job ids in a comma-separated list; anything that is not an id is ignored."""
    ids = set()
    for part in text.split(",")[:200]:
        with contextlib.suppress(ValueError):
            ids.add(uuid.UUID(part.strip()))
    return ids


def _still_sending(job: Job) -> bool:
    """True for a newsletter whose batches are still going out (the hand-over job finishes first)."""
    if job.kind != "send_newsletter" or job.status != JobStatus.SUCCEEDED.value:
        return False
    return (db.session.scalar(
        select(func.count()).select_from(Job).where(
            Job.parent_id == job.id, Job.status.not_in([s.value for s in TERMINAL]))
    ) or 0) > 0
