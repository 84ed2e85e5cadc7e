"""The job row: the truth about every piece of background work.

Redis holds only the queue. Status changes go through ``webapp.jobstate``; nothing
else writes ``status``.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import Model

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware (a callable, so each row gets its own)."""
    return datetime.now(UTC)


class JobStatus(enum.StrEnum):
    """Where a job is in its life; see ``webapp.jobstate`` for the allowed moves."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True once nothing more will happen without a retry."""
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class Job(Model):
    """One background task: what to do (kind, params), for whom, and how it went."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_created", "owner_id", "created_at"),
        Index("ix_jobs_status_updated", "status", "updated_at"),
        # Deleting a job sets its dependants' depends_on_id to NULL; without this each
        # delete scans the whole table. Partial: most jobs depend on nothing.
        Index("ix_jobs_depends_on_id", "depends_on_id", postgresql_where=text("depends_on_id IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(40))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    queue: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(200), default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    message: Mapped[str] = mapped_column(String(500), default="")
    error: Mapped[str | None] = mapped_column(Text)
    progress_done: Mapped[int] = mapped_column(default=0)
    progress_total: Mapped[int | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    rq_job_id: Mapped[str | None] = mapped_column(String(80), index=True)
    runs: Mapped[int] = mapped_column(default=0)
    depends_on_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    worker_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Time of the last status change (heartbeats and progress do not touch it).
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    announced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    owner = relationship("User", lazy="select")
    depends_on = relationship("Job", remote_side=[id], foreign_keys=[depends_on_id], lazy="select")

    @property
    def state(self) -> JobStatus:
        """The status as an enum."""
        return JobStatus(self.status)

    @property
    def is_terminal(self) -> bool:
        """True once the job has finished one way or another."""
        return self.state.is_terminal

    @property
    def percent(self) -> int | None:
        """Progress as a whole percentage, or None when the total is unknown."""
        if not self.progress_total:
            return None
        return max(0, min(100, int(100 * self.progress_done / self.progress_total)))

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start to finish (or to now while running)."""
        if not self.started_at:
            return None
        end = self.finished_at or utcnow()
        return (end - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """The public JSON view of the row."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": str(self.id),
            "kind": self.kind,
            "title": self.title,
            "status": self.status,
            "progress": {"done": self.progress_done, "total": self.progress_total, "percent": self.percent},
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "next_retry_at": iso(self.next_retry_at),
        }


class JobEvent(Model):
    """One line of a job's history: submitted, started, retried, succeeded, reconciled..."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_at_event", "at", "event"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    event: Mapped[str] = mapped_column(String(20))
    attempt: Mapped[int] = mapped_column(default=0)
    seconds: Mapped[float | None] = mapped_column()
    detail: Mapped[str] = mapped_column(String(500), default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
