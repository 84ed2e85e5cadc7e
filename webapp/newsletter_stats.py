"""Where a newsletter's send stands, computed from its delivery rows and batch jobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Delivery, Job, Newsletter
from webapp.models.job import TERMINAL


@dataclass
class SendStats:
    """Counts and rate of one newsletter's send."""

    total: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0
    live_batches: int = 0
    first_sent: datetime | None = None
    last_sent: datetime | None = None
    send_job: Job | None = None

    @property
    def state(self) -> str:
        """draft, preparing, sending, sent, stopped (cancelled/failed with some left)."""
        if self.send_job is None:
            return "draft"
        if not self.send_job.is_terminal:
            return "preparing"
        if self.live_batches:
            return "sending"
        if self.pending:
            return "stopped"
        return "sent"

    @property
    def is_live(self) -> bool:
        """True while anything may still change."""
        return self.state in ("preparing", "sending")

    @property
    def percent(self) -> int:
        """Share of deliveries that are settled."""
        if not self.total:
            return 0
        return int(100 * (self.total - self.pending) / self.total)

    @property
    def rate(self) -> float | None:
        """Messages per second so far."""
        if not self.first_sent or not self.last_sent or self.sent < 2:
            return None
        seconds = (self.last_sent - self.first_sent).total_seconds()
        return self.sent / seconds if seconds > 0 else None


def send_stats(newsletter: Newsletter) -> SendStats:
    """Gather the counts for ``newsletter`` in two queries."""
    stats = SendStats()
    if newsletter.send_job_id is None:
        return stats
    stats.send_job = db.session.get(Job, newsletter.send_job_id)
    rows = db.session.execute(
        select(Delivery.status, func.count(), func.min(Delivery.sent_at), func.max(Delivery.sent_at))
        .where(Delivery.newsletter_id == newsletter.id).group_by(Delivery.status)
    ).all()
    for status, count, first, last in rows:
        setattr(stats, status, count)
        stats.total += count
        if status == "sent":
            stats.first_sent, stats.last_sent = first, last
    stats.live_batches = db.session.scalar(
        select(func.count()).select_from(Job).where(
            Job.parent_id == newsletter.send_job_id, Job.status.not_in([s.value for s in TERMINAL]))
    ) or 0
    return stats
