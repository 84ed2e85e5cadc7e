"""Firing schedules: the due slots of every schedule, and "run now".

Firing a slot is one transaction: the schedule row is locked, the slot's schedule_runs
row is inserted (its unique constraint is the proof that the slot fires once), the job
rows are created and next_run_at moves on; only after the commit are the jobs handed
to Redis. A process killed before the commit leaves nothing (the slot fires again
later, once); killed after it, it leaves queued rows that the reconciler hands over.
Only one process fires at a time (a PostgreSQL advisory lock), which keeps firing
cheap; the unique constraint would hold without it.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import case, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from webapp import jobstate, queueing, schedule_rules, scheduling, submissions
from webapp.extensions import db
from webapp.models import Job, Newsletter, Schedule, ScheduleRun
from webapp.models.job import utcnow
from webapp.schedule_params import SCHEDULABLE, ScheduleError
from webapp.scheduling import locked, pause

log = logging.getLogger("backhaul.schedules")

LOCK_KEY = 0x7363686564  # "sched"
MISSED_ROWS = 100
OWNER_GONE = "Paused: its owner's account was removed"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def seconds_until_due(now: datetime | None = None) -> float | None:
    """Seconds until the earliest active schedule is due (<= 0: due now); None when there is none."""
    earliest = db.session.scalar(
        # One whose owner was removed is due at once: firing pauses it with the reason.
        select(func.min(case((Schedule.owner_id.is_(None), literal(EPOCH)), else_=Schedule.next_run_at)))
        .where(Schedule.paused.is_(False))
    )
    db.session.commit()
    if earliest is None:
        return None
    return (earliest - (now or utcnow())).total_seconds()


def fire_due_if_leader(now: datetime | None = None, *, ensure_system: bool = False) -> int | None:
    """Fire every due slot if no other process is firing right now; None when another one is.

    ``ensure_system`` first creates the system schedules a deployment should never be without
    (under the same lock, so two workers starting at once create them once).
    """
    with db.engine.connect() as lock_conn:
        if not lock_conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
            return None
        try:
            if ensure_system:
                scheduling.ensure_system_schedules()
            return fire_due(now)
        finally:
            lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            lock_conn.commit()


def fire_due(now: datetime | None = None) -> int:
    """Fire the due slot of every due schedule; returns the number of runs started."""
    db.session.execute(
        update(Schedule).where(Schedule.owner_id.is_(None), Schedule.paused.is_(False))
        .values(paused=True, paused_reason=OWNER_GONE, next_run_at=None)
    )
    db.session.commit()
    due = db.session.scalars(
        select(Schedule.id).where(Schedule.paused.is_(False), Schedule.next_run_at <= (now or utcnow()))
        .order_by(Schedule.next_run_at).limit(100)
    ).all()
    db.session.commit()
    return sum(bool(fire_schedule(schedule_id, now or utcnow())) for schedule_id in due)


def fire_schedule(schedule_id: int, now: datetime) -> list[Job]:
    """Fire the due slot of one schedule in one transaction (see the module docstring); the jobs started."""
    schedule = db.session.scalars(
        select(Schedule).where(Schedule.id == schedule_id, Schedule.paused.is_(False), Schedule.next_run_at <= now)
        .with_for_update(skip_locked=True).execution_options(populate_existing=True)
    ).one_or_none()
    if schedule is None or schedule.next_run_at is None:
        db.session.rollback()
        return []
    plan = schedule_rules.plan_due(schedule.cron, schedule.tz, schedule.next_run_at, now, schedule.grace_seconds)
    for slot in plan.missed[-MISSED_ROWS:]:
        _insert_run(schedule.id, slot, now, missed=True)
    if plan.missed_total:
        schedule.missed_count += plan.missed_total
        log.warning("schedule %s missed %s slot(s)", schedule.id, plan.missed_total,
                    extra={"event": "schedule_missed", "schedule_id": schedule.id})
    jobs: list[Job] = []
    if plan.run is not None:
        try:
            jobs = _run_slot(schedule, plan.run, now, catch_up=plan.catch_up)
        except ScheduleError as exc:
            db.session.rollback()
            pause(schedule_id, f"Paused: {exc}")
            log.warning("schedule %s paused: %s", schedule_id, exc, extra={"event": "schedule_paused"})
            return []
    schedule.next_run_at = plan.next_run_at
    _stall("before-commit")
    db.session.commit()
    _stall("after-commit")
    _hand_over(jobs)
    return jobs


def run_now(schedule_id: int, now: datetime | None = None) -> list[Job]:
    """An extra run of the schedule at once (its slots are not touched); ScheduleError when it cannot."""
    now = now or utcnow()
    schedule = locked(schedule_id)
    if schedule is None:
        db.session.rollback()
        raise ScheduleError("No such schedule.")
    if schedule.owner_id is None:
        db.session.rollback()
        raise ScheduleError("Its owner's account was removed.")
    try:
        jobs = _run_slot(schedule, now, now, manual=True)
    except ScheduleError:
        db.session.rollback()
        raise
    db.session.commit()
    _hand_over(jobs)
    return jobs


def _run_slot(schedule: Schedule, slot: datetime, now: datetime, *, catch_up: bool = False,
              manual: bool = False) -> list[Job]:
    """Record the slot and create its jobs in the open transaction; [] when the slot was already fired."""
    run_id = _insert_run(schedule.id, slot, now, catch_up=catch_up, manual=manual)
    if run_id is None:
        return []
    jobs = _make_jobs(schedule, slot, manual)
    db.session.execute(update(ScheduleRun).where(ScheduleRun.id == run_id).values(job_id=jobs[0].id))
    schedule.last_run_at = slot
    schedule.last_job_id = jobs[0].id
    log.info("schedule %s fired slot %s%s", schedule.id, slot.isoformat(), " (catch-up)" if catch_up else "",
             extra={"event": "schedule_fired", "schedule_id": schedule.id, "job_id": str(jobs[0].id),
                    "seconds": (now - slot).total_seconds()})
    return jobs


def _insert_run(schedule_id: int, slot: datetime, now: datetime, **flags: bool) -> int | None:
    """INSERT the (schedule, slot) row; None when that slot already has one."""
    stmt = pg_insert(ScheduleRun).values(schedule_id=schedule_id, slot_at=slot, fired_at=now,
                                          catch_up=flags.get("catch_up", False), missed=flags.get("missed", False),
                                          manual=flags.get("manual", False))
    return db.session.scalar(stmt.on_conflict_do_nothing(constraint="uq_schedule_runs_slot").returning(ScheduleRun.id))


def _make_jobs(schedule: Schedule, slot: datetime, manual: bool) -> list[Job]:
    """The job rows of one run (uncommitted), with relative periods resolved for the slot's day."""
    params = dict(schedule.params or {})
    owner_id = schedule.owner_id
    assert owner_id is not None, "schedules without an owner are paused before they fire"
    noun = SCHEDULABLE[schedule.kind][0]
    cadence = schedule_rules.cadence(schedule.cron)
    if manual:
        cadence, noun = noun[0].upper() + noun[1:], "(run now)"
    if schedule.kind == "send_newsletter":
        return [_newsletter_job(schedule)]
    if schedule.kind in ("export_orders", "sales_report"):
        period = params.pop("period", None)
        recipients = params.pop("recipients", [])
        if period:
            first, last, label = schedule_rules.resolve_period(period, schedule_rules.local_date(slot, schedule.tz))
            params["date_from"], params["date_to"] = first.isoformat(), last.isoformat()
        else:
            label = f"{params['date_from']} to {params['date_to']}"
        title = f"{cadence} {noun} — {label}"
        if schedule.kind == "export_orders":
            return [submissions.export_orders(owner_id, params, title, make=jobstate.create)]
        return submissions.sales_report(owner_id, params, recipients, title, make=jobstate.create)
    label = slot.astimezone(schedule_rules.zone(schedule.tz)).strftime("%Y-%m-%d %H:%M")
    return [jobstate.create(schedule.kind, owner_id, params, f"{cadence} {noun} — {label}")]


def _newsletter_job(schedule: Schedule) -> Job:
    """The send job of a scheduled newsletter, recorded on the newsletter in the same transaction."""
    newsletter = db.session.get(Newsletter, schedule.newsletter_id, with_for_update=True)
    if newsletter is None:
        raise ScheduleError("the newsletter was deleted")
    if newsletter.send_job_id is not None:
        raise ScheduleError("the newsletter had already been sent")
    assert schedule.owner_id is not None, "schedules without an owner are paused before they fire"
    job = jobstate.create("send_newsletter", schedule.owner_id, {"newsletter_id": newsletter.id},
                          f"Newsletter “{newsletter.subject[:120]}” (scheduled)")
    newsletter.send_job_id = job.id
    return job


def _hand_over(jobs: list[Job]) -> None:
    """Give the committed job rows to Redis; a row Redis does not take waits for the reconciler."""
    for job in jobs:
        # Read back so that a dependent job finds the row it waits for (and its RQ id).
        row = db.session.get(Job, job.id)
        if row is not None:
            queueing.enqueue(row)


def _stall(point: str) -> None:
    """Test-only fault injection: BACKHAUL_CLOCK_STALL=<point>:<seconds> holds the firing process there,
    so a test can SIGKILL it at that exact point. Ignored outside BACKHAUL_ENV=test."""
    wanted = os.environ.get("BACKHAUL_CLOCK_STALL", "")
    if wanted.startswith(point + ":") and current_app.config["ENV_NAME"] == "test":
        log.warning("schedule clock stalled %s (test)", point, extra={"event": "schedule_stall"})
        time.sleep(float(wanted.split(":", 1)[1]))
