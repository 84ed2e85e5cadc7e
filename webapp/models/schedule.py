"""Schedules: a job kind with parameters, run on a cron rule in a time zone (or once), and its runs.

``schedule_runs`` holds one row per (schedule, slot) that came due — run, caught up or
missed. Its unique constraint is what makes "exactly one run per slot" hold whatever
number of processes race to fire it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import Model
from webapp.models.job import JSONType, utcnow

DEFAULT_GRACE_SECONDS = 6 * 3600


class Schedule(Model):
    """A recurring (cron) or one-shot (run_at) job submission, owned by a person."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    # SET NULL, not CASCADE: a schedule whose owner was removed stays visible, paused with the reason.
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    cron: Mapped[str | None] = mapped_column(String(120))
    run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    tz: Mapped[str] = mapped_column(String(64), default="UTC")
    grace_seconds: Mapped[int] = mapped_column(default=DEFAULT_GRACE_SECONDS)
    system: Mapped[bool] = mapped_column(default=False)
    newsletter_id: Mapped[int | None] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"), index=True)
    paused: Mapped[bool] = mapped_column(default=False)
    paused_reason: Mapped[str | None] = mapped_column(String(300))
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # The slot of the latest run (not the time it fired).
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    missed_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    owner = relationship("User", lazy="select")
    last_job = relationship("Job", lazy="select")
    newsletter = relationship("Newsletter", lazy="select")

    @property
    def is_one_shot(self) -> bool:
        """True for a schedule that runs once (run_at) rather than on a cron rule."""
        return self.cron is None

    @property
    def state(self) -> str:
        """"paused", "done" (a one-shot that has fired or was missed) or "active"."""
        if self.paused:
            return "paused"
        if self.next_run_at is None:
            return "done"
        return "active"


class ScheduleRun(Model):
    """One slot of a schedule that came due: the job it became, or that it was missed."""

    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("schedule_id", "slot_at", name="uq_schedule_runs_slot"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    slot_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    fired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    catch_up: Mapped[bool] = mapped_column(default=False)
    missed: Mapped[bool] = mapped_column(default=False)
    manual: Mapped[bool] = mapped_column(default=False)

    job = relationship("Job", lazy="select")

    @property
    def lag_seconds(self) -> float:
        """How long after its slot this run was fired."""
        return (self.fired_at - self.slot_at).total_seconds()
