"""Schedules in the database: create, change, pause, resume, run now, and fire the due slots.

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
from datetime import UTC, date, datetime
from typing import Any

from flask import current_app
from sqlalchemy import case, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from webapp import jobstate, queueing, schedule_rules, submissions
from webapp.extensions import db
from webapp.models import Job, Newsletter, Schedule, ScheduleRun
from webapp.models.job import utcnow
from webapp.models.order import ORDER_STATUSES
from webapp.schedule_rules import RuleError

log = logging.getLogger("backhaul.schedules")

LOCK_KEY = 0x7363686564  # "sched"
MISSED_ROWS = 100
OWNER_GONE = "Paused: its owner's account was removed"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Kind -> (what a run is called in titles, only admins may schedule it).
SCHEDULABLE: dict[str, tuple[str, bool]] = {
    "export_orders": ("orders export", False),
    "sales_report": ("sales report", False),
    "send_newsletter": ("newsletter", False),
    "prune_jobs": ("retention prune", True),
    "selftest": ("self-test", True),
}
SELFTEST_KEYS = {"seconds", "fail_attempts", "marker"}


class ScheduleError(RuleError):
    """A schedule that cannot be made, changed or fired as asked; the message is for the person."""


# --- parameters --------------------------------------------------------------------------------


def clean_params(kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The parameters a schedule of ``kind`` keeps, checked; ScheduleError names what is wrong."""
    if kind not in SCHEDULABLE or kind == "send_newsletter":
        names = ", ".join(k for k in SCHEDULABLE if k != "send_newsletter")
        raise ScheduleError(f"Kind {kind[:40]!r} cannot be scheduled here; choose one of {names}.")
    if not isinstance(raw, dict):
        raise ScheduleError("Parameters must be a JSON object.")
    allowed = {"export_orders": {"period", "date_from", "date_to", "status"},
               "sales_report": {"period", "date_from", "date_to", "status", "customer", "recipients"},
               "prune_jobs": {"days"}, "selftest": SELFTEST_KEYS}[kind]
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ScheduleError(f"Unknown parameter {unknown[0][:40]!r} for {kind}; use {', '.join(sorted(allowed))}.")
    if kind == "prune_jobs":
        return _days_param(raw)
    if kind == "selftest":
        return {k: v for k, v in raw.items() if isinstance(v, int | float | str)}
    params: dict[str, Any] = _period_params(raw)
    status = raw.get("status") or None
    if status is not None and status not in ORDER_STATUSES:
        raise ScheduleError(f"Unknown order status {str(status)[:40]!r}; use one of {', '.join(ORDER_STATUSES)}.")
    params["status"] = status
    if kind == "sales_report":
        customer = str(raw.get("customer") or "").strip()
        if len(customer) > 100:
            raise ScheduleError("The customer filter is limited to 100 characters.")
        params["customer"] = customer or None
        try:
            params["recipients"] = submissions.parse_recipients(raw.get("recipients") or "")
        except ValueError as exc:
            raise ScheduleError(str(exc)) from None
        if len(params["recipients"]) > submissions.MAX_RECIPIENTS:
            raise ScheduleError(f"At most {submissions.MAX_RECIPIENTS} recipients.")
    return params


def _days_param(raw: dict[str, Any]) -> dict[str, Any]:
    """{"days": N} for the prune, or {} for the configured retention."""
    if raw.get("days") in (None, ""):
        return {}
    try:
        days = int(raw["days"])
    except (TypeError, ValueError):
        days = 0
    if days < 1:
        raise ScheduleError("days must be a whole number of at least 1.")
    return {"days": days}


def _period_params(raw: dict[str, Any]) -> dict[str, Any]:
    """A relative period (resolved at each run) or a fixed date range."""
    period = raw.get("period") or None
    if period is not None:
        if period not in schedule_rules.PERIODS:
            raise ScheduleError(f"Unknown period {str(period)[:40]!r}; use one of {', '.join(schedule_rules.PERIODS)}.")
        return {"period": period}
    try:
        first, last = date.fromisoformat(str(raw["date_from"])), date.fromisoformat(str(raw["date_to"]))
    except (KeyError, ValueError):
        raise ScheduleError("Give a period (e.g. \"last_week\") or date_from and date_to as YYYY-MM-DD.") from None
    if last < first:
        raise ScheduleError("The end date is before the start date.")
    return {"date_from": first.isoformat(), "date_to": last.isoformat()}


def what_it_runs(schedule: Schedule) -> str:
    """A schedule's job in words: "Sales report for last week, e-mailed to 2 recipients"."""
    if schedule.newsletter is not None:
        return f"Newsletter “{schedule.newsletter.subject}”"
    label = SCHEDULABLE.get(schedule.kind, (schedule.kind, False))[0]
    params = schedule.params or {}
    words = label[0].upper() + label[1:]
    if "period" in params:
        period = schedule_rules.PERIODS[params["period"]]
        words += f" for {period[0].lower()}{period[1:]}"
    elif "date_from" in params:
        words += f" for {params['date_from']} to {params['date_to']}"
    if params.get("status"):
        words += f" ({params['status']} orders)"
    if params.get("recipients"):
        count = len(params["recipients"])
        words += f", e-mailed to {count} recipient{'s' if count != 1 else ''}"
    return words


# --- creating and changing ---------------------------------------------------------------------


def create_schedule(kind: str, owner_id: int, params: dict[str, Any], cron: str, tz: str, *,
                    grace_seconds: int | None = None, now: datetime | None = None) -> Schedule:
    """A recurring schedule, checked and committed; ScheduleError/RuleError say what is wrong."""
    schedule_rules.check_cron(cron)
    schedule_rules.zone(tz)
    schedule = Schedule(kind=kind, owner_id=owner_id, params=clean_params(kind, params),
                        system=SCHEDULABLE[kind][1])
    _set_rule(schedule, cron, tz, grace_seconds, now or utcnow())
    db.session.add(schedule)
    db.session.commit()
    log.info("schedule %s created: %s %s", schedule.id, kind, schedule.cron, extra={"event": "schedule_created"})
    return schedule


def change_schedule(schedule: Schedule, params: dict[str, Any], cron: str, tz: str, *,
                    grace_seconds: int | None = None, now: datetime | None = None) -> Schedule:
    """New parameters and rule for a recurring schedule; the next slot is computed from now."""
    schedule.params = clean_params(schedule.kind, params)
    _set_rule(schedule, cron, tz, grace_seconds, now or utcnow())
    db.session.commit()
    return schedule


def _set_rule(schedule: Schedule, cron: str, tz: str, grace_seconds: int | None, now: datetime) -> None:
    """Check and store the rule, and the next slot after ``now`` (unless paused)."""
    schedule_rules.zone(tz)
    schedule.cron = schedule_rules.check_cron(cron)
    schedule.tz = tz
    if grace_seconds is not None:
        if grace_seconds < 0:
            raise ScheduleError("The grace window cannot be negative.")
        schedule.grace_seconds = grace_seconds
    schedule.next_run_at = None if schedule.paused else schedule_rules.next_slot(schedule.cron, tz, now)


def pause(schedule_id: int, reason: str | None = None) -> Schedule | None:
    """Stop firing a schedule until resumed."""
    schedule = _locked(schedule_id)
    if schedule is not None:
        schedule.paused = True
        schedule.paused_reason = reason
        db.session.commit()
    return schedule


def resume(schedule_id: int, now: datetime | None = None) -> Schedule | None:
    """Fire again from the next slot after now (slots while paused are not caught up)."""
    now = now or utcnow()
    schedule = _locked(schedule_id)
    if schedule is None:
        return None
    if schedule.owner_id is None:
        db.session.rollback()
        raise ScheduleError("Its owner's account was removed: create the schedule again under another account.")
    if schedule.is_one_shot:
        if schedule.run_at is None or schedule.run_at <= now:
            db.session.rollback()
            raise ScheduleError("Its time has passed: schedule it again for a time in the future.")
        schedule.next_run_at = schedule.run_at
    else:
        schedule.next_run_at = schedule_rules.next_slot(schedule.cron, schedule.tz, now)
    schedule.paused = False
    schedule.paused_reason = None
    db.session.commit()
    return schedule


def delete_schedule(schedule_id: int) -> bool:
    """Remove a schedule and its run history (the jobs it made stay)."""
    schedule = _locked(schedule_id)
    if schedule is None:
        return False
    db.session.delete(schedule)
    db.session.commit()
    return True


def _locked(schedule_id: int) -> Schedule | None:
    """The schedule row, locked for this transaction (waits for a firing in progress)."""
    return db.session.scalars(
        select(Schedule).where(Schedule.id == schedule_id).with_for_update().execution_options(populate_existing=True)
    ).one_or_none()


# --- newsletters at a chosen time --------------------------------------------------------------


def pending_newsletter_send(newsletter_id: int) -> Schedule | None:
    """The one-shot schedule that will send this newsletter, if there is one."""
    return db.session.scalars(
        select(Schedule).where(Schedule.newsletter_id == newsletter_id, Schedule.next_run_at.is_not(None),
                               Schedule.paused.is_(False))
    ).first()


def missed_newsletter_send(newsletter_id: int) -> Schedule | None:
    """The latest scheduled send of this newsletter if it was missed (Backhaul was down past its grace window)."""
    latest = db.session.scalars(
        select(Schedule).where(Schedule.newsletter_id == newsletter_id).order_by(Schedule.id.desc()).limit(1)
    ).first()
    if latest is None or latest.next_run_at is not None or latest.last_job_id is not None or not latest.missed_count:
        return None
    return latest


def schedule_newsletter(newsletter: Newsletter, owner_id: int, local: datetime, tz: str, *,
                        now: datetime | None = None) -> Schedule:
    """Send ``newsletter`` at the wall-clock time ``local`` in ``tz``; ScheduleError for a time in the past."""
    now = now or utcnow()
    run_at = schedule_rules.to_instant(local.replace(second=0, microsecond=0), schedule_rules.zone(tz))
    if run_at <= now:
        shown = now.astimezone(schedule_rules.zone(tz)).strftime("%Y-%m-%d %H:%M")
        raise ScheduleError(f"{local:%Y-%m-%d %H:%M} is in the past (it is now {shown} in {tz}): "
                            "choose a later time, or send it now.")
    if newsletter.send_job_id is not None:
        raise ScheduleError("This newsletter has already been sent (or is sending).")
    if pending_newsletter_send(newsletter.id) is not None:
        raise ScheduleError("This newsletter is already scheduled; cancel that first.")
    schedule = Schedule(kind="send_newsletter", owner_id=owner_id, params={"newsletter_id": newsletter.id},
                        run_at=run_at, tz=tz, grace_seconds=3600, newsletter_id=newsletter.id, next_run_at=run_at)
    db.session.add(schedule)
    db.session.commit()
    return schedule


def cancel_newsletter_send(newsletter_id: int) -> bool:
    """Cancel a scheduled send that has not started; False when there is none (or it already fired)."""
    schedule = db.session.scalars(
        select(Schedule).where(Schedule.newsletter_id == newsletter_id, Schedule.next_run_at.is_not(None))
        .with_for_update()
    ).first()
    if schedule is None:
        db.session.rollback()
        return False
    db.session.delete(schedule)
    db.session.commit()
    return True


# --- firing ------------------------------------------------------------------------------------


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


def fire_due_if_leader(now: datetime | None = None) -> int | None:
    """Fire every due slot if no other process is firing right now; None when another one is."""
    with db.engine.connect() as lock_conn:
        if not lock_conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
            return None
        try:
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
    if schedule is None:
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
    schedule = _locked(schedule_id)
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
            return [submissions.export_orders(schedule.owner_id, params, title, make=jobstate.create)]
        return submissions.sales_report(schedule.owner_id, params, recipients, title, make=jobstate.create)
    label = slot.astimezone(schedule_rules.zone(schedule.tz)).strftime("%Y-%m-%d %H:%M")
    return [jobstate.create(schedule.kind, schedule.owner_id, params, f"{cadence} {noun} — {label}")]


def _newsletter_job(schedule: Schedule) -> Job:
    """The send job of a scheduled newsletter, recorded on the newsletter in the same transaction."""
    newsletter = db.session.get(Newsletter, schedule.newsletter_id, with_for_update=True)
    if newsletter is None:
        raise ScheduleError("the newsletter was deleted")
    if newsletter.send_job_id is not None:
        raise ScheduleError("the newsletter had already been sent")
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

