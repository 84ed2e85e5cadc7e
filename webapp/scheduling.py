"""Schedules in the database: create, change, pause, resume, delete; newsletters sent at a chosen time.

Firing the due slots is in ``webapp.schedule_firing``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import select

from webapp import schedule_rules
from webapp.extensions import db
from webapp.models import Newsletter, Schedule, User
from webapp.models.job import utcnow
from webapp.schedule_params import SCHEDULABLE, ScheduleError, clean_params

log = logging.getLogger("backhaul.schedules")


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


# What every deployment runs without anyone asking: (kind, cron, time zone, params).
SYSTEM_SCHEDULES: tuple[tuple[str, str, str, dict[str, Any]], ...] = (("prune_jobs", "30 3 * * *", "UTC", {}),)


def ensure_system_schedules() -> list[Schedule]:
    """Create the system schedules that do not exist yet, owned by the first admin; returns the new ones.

    Nothing happens before an admin exists (a schedule needs an owner) or when
    SYSTEM_SCHEDULES is off. A system schedule an admin paused stays paused; one an admin
    deleted comes back at the next worker start (pause it to stop it).
    """
    if not current_app.config.get("SYSTEM_SCHEDULES", True):
        return []
    admin_id = db.session.scalar(select(User.id).where(User.is_admin.is_(True)).order_by(User.id).limit(1))
    if admin_id is None:
        db.session.commit()
        return []
    existing = set(db.session.scalars(select(Schedule.kind).where(Schedule.system.is_(True))))
    created = [create_schedule(kind, admin_id, params, cron, tz)
               for kind, cron, tz, params in SYSTEM_SCHEDULES if kind not in existing]
    db.session.commit()
    return created


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
    schedule = locked(schedule_id)
    if schedule is not None:
        schedule.paused = True
        schedule.paused_reason = reason
        db.session.commit()
    return schedule


def resume(schedule_id: int, now: datetime | None = None) -> Schedule | None:
    """Fire again from the next slot after now (slots while paused are not caught up)."""
    now = now or utcnow()
    schedule = locked(schedule_id)
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
        assert schedule.cron, "a schedule is either one-shot or has a rule"
        schedule.next_run_at = schedule_rules.next_slot(schedule.cron, schedule.tz, now)
    schedule.paused = False
    schedule.paused_reason = None
    db.session.commit()
    return schedule


def delete_schedule(schedule_id: int) -> bool:
    """Remove a schedule and its run history (the jobs it made stay)."""
    schedule = locked(schedule_id)
    if schedule is None:
        return False
    db.session.delete(schedule)
    db.session.commit()
    return True


def locked(schedule_id: int) -> Schedule | None:
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
