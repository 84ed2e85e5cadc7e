"""Subscribers, newsletters and one delivery row per (newsletter, subscriber)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, String, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import Model
from webapp.models.job import utcnow
from webapp.models.user import User


class Subscriber(Model):
    """Someone on the mailing list."""

    __tablename__ = "subscribers"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(default=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The last time an administrator put an unsubscribed address back on the list, who did it and
    # why: the address had asked to hear no more, so the record says who decided otherwise.
    resubscribed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resubscribed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    resubscribe_reason: Mapped[str | None] = mapped_column(String(200))
    resubscribed_by: Mapped[User | None] = relationship(foreign_keys=[resubscribed_by_id], lazy="joined")


# One subscription per address, whatever its capitalisation.
Index("uq_subscribers_email_lower", func.lower(Subscriber.email), unique=True)


class Newsletter(Model):
    """A message composed once and sent to every active subscriber."""

    __tablename__ = "newsletters"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    body_format: Mapped[str] = mapped_column(String(10), default="markdown")
    send_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeliveryStatus(enum.StrEnum):
    """What happened to one newsletter for one subscriber."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class Delivery(Model):
    """One newsletter to one subscriber; the unique constraint makes 'never twice' hold."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("newsletter_id", "subscriber_id", name="uq_delivery_once"),
        Index("ix_deliveries_newsletter_status", "newsletter_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    batch_no: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(10), default=DeliveryStatus.PENDING.value)
    error: Mapped[str | None] = mapped_column(String(500))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
