"""Prometheus metrics, gathered at scrape time from PostgreSQL and Redis.

Nothing is counted in process memory, so the numbers are the same whichever
gunicorn process answers and however many worker hosts there are. Event counts
come from the job_events table: pruning old events lowers them, which Prometheus
treats as a counter reset.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator

from flask import Response, abort, current_app, request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from rq import Worker
from rq.serializers import JSONSerializer
from sqlalchemy import case, func, or_, select

from webapp.extensions import db
from webapp.kinds import QUEUES
from webapp.models import Job, JobEvent, Schedule, ScheduleRun
from webapp.models.job import utcnow
from webapp.queueing import get_queue, redis_conn

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


def refuse_scrape() -> Response | None:
    """A refusal for this scrape, or None when it may read the metrics.

    With METRICS_TOKEN set, the request must carry ``Authorization: Bearer <token>``.
    Without one, the metrics are open only outside production: a production site that
    forgot the token does not publish its job counts and worker names to the world.
    """
    token = current_app.config["METRICS_TOKEN"]
    if not token:
        if current_app.config["ENV_NAME"] == "production":
            abort(404)
        return None
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        return Response("metrics need a bearer token\n", 401, {"WWW-Authenticate": "Bearer"})
    return None


def queue_ages() -> dict[str, float]:
    """Seconds the oldest waiting job of each queue has waited (from the rows, the truth).

    A retry waiting for its backoff is not waiting for a worker: it counts from when it fell due.
    """
    now = utcnow()
    waiting_since = func.coalesce(Job.next_retry_at, Job.updated_at)
    rows = db.session.execute(
        select(Job.queue, func.min(waiting_since))
        .where(Job.status == "queued", or_(Job.next_retry_at.is_(None), Job.next_retry_at <= now))
        .group_by(Job.queue)
    ).all()
    return {queue: max(0.0, (now - oldest).total_seconds()) for queue, oldest in rows}


def overdue_retries() -> tuple[int, float]:
    """How many retries are due but not yet handed to a queue, and how overdue the oldest is (s).

    The reconciler hands a retry over within about a second of its due time; one overdue for
    more than ~15 s means no reconciler is running (no worker up) or it cannot reach Redis.
    """
    now = utcnow()
    count, oldest = db.session.execute(
        select(func.count(), func.min(Job.next_retry_at)).where(Job.status == "queued", Job.next_retry_at <= now)
    ).one()
    return count, (now - oldest).total_seconds() if oldest is not None else 0.0


def queue_depths() -> dict[str, int] | None:
    """Jobs waiting in each RQ queue, or None when Redis is unreachable."""
    try:
        return {name: get_queue(name).count for name in QUEUES}
    except RedisError:
        return None


def worker_states() -> list[dict] | None:
    """Each RQ worker's name, state and current RQ job id, or None when Redis is unreachable."""
    try:
        workers = Worker.all(connection=redis_conn(), serializer=JSONSerializer)
        return [{"name": w.name, "state": w.get_state(), "job": w.get_current_job_id(),
                 "queues": ",".join(w.queue_names())} for w in workers]
    except RedisError:
        return None


def schedule_families() -> Iterator:
    """Schedule lag (how late the most overdue active schedule is now, and how late the latest run fired)
    and missed slots, from the rows."""
    now = utcnow()
    overdue = db.session.scalar(
        select(func.min(Schedule.next_run_at)).where(Schedule.paused.is_(False), Schedule.next_run_at <= now)
    )
    lag = GaugeMetricFamily("backhaul_schedule_lag_seconds",
                            "How late the most overdue active schedule is right now (0 when none is due)")
    lag.add_metric([], (now - overdue).total_seconds() if overdue else 0.0)
    yield lag
    last = db.session.execute(
        select(ScheduleRun.fired_at, ScheduleRun.slot_at)
        .where(ScheduleRun.missed.is_(False), ScheduleRun.manual.is_(False), ScheduleRun.catch_up.is_(False))
        .order_by(ScheduleRun.fired_at.desc()).limit(1)
    ).first()
    fired = GaugeMetricFamily("backhaul_schedule_last_fire_lag_seconds",
                              "Seconds between the latest on-time scheduled slot and its firing")
    fired.add_metric([], (last.fired_at - last.slot_at).total_seconds() if last else 0.0)
    yield fired
    missed = CounterMetricFamily("backhaul_schedule_missed_slots", "Slots skipped because they were older than "
                                 "their schedule's grace window or folded into a catch-up run", labels=["kind"])
    for kind, count in db.session.execute(
        select(Schedule.kind, func.coalesce(func.sum(Schedule.missed_count), 0)).group_by(Schedule.kind)
    ):
        missed.add_metric([kind], int(count))
    yield missed


class JobsCollector(Collector):
    """Builds every metric family on each scrape."""

    def collect(self) -> Iterator:
        """Yield the metric families."""
        events = CounterMetricFamily("backhaul_job_events", "Job events by kind and event "
                                     "(submitted, started, succeeded, failed, retried, interrupted, cancelled, "
                                     "reconciled, requeued)", labels=["kind", "event"])
        for kind, event, count in db.session.execute(
            select(JobEvent.kind, JobEvent.event, func.count()).group_by(JobEvent.kind, JobEvent.event)
        ):
            events.add_metric([kind, event], count)
        yield events

        repairs = CounterMetricFamily("backhaul_reconciler_repairs", "Repairs made by the reconciler")
        repairs.add_metric([], db.session.scalar(
            select(func.count()).select_from(JobEvent).where(JobEvent.event == "reconciled")) or 0)
        yield repairs

        yield self._durations()

        current = GaugeMetricFamily("backhaul_jobs", "Jobs by kind and status right now", labels=["kind", "status"])
        for kind, status, count in db.session.execute(
            select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
        ):
            current.add_metric([kind, status], count)
        yield current

        age = GaugeMetricFamily("backhaul_queue_oldest_job_age_seconds", "Age of the oldest waiting job",
                                labels=["queue"])
        ages = queue_ages()
        for name in QUEUES:
            age.add_metric([name], ages.get(name, 0.0))
        yield age
        overdue, overdue_age = overdue_retries()
        due = GaugeMetricFamily("backhaul_retries_overdue", "Retries due but not yet handed to a queue")
        due.add_metric([], overdue)
        yield due
        oldest = GaugeMetricFamily("backhaul_retry_oldest_overdue_seconds",
                                   "How long past its due time the oldest waiting retry is (alert above ~15 s)")
        oldest.add_metric([], overdue_age)
        yield oldest
        yield from schedule_families()
        db.session.commit()

        up = GaugeMetricFamily("backhaul_redis_up", "1 when Redis answered this scrape")
        depths = queue_depths()
        workers = worker_states() if depths is not None else None
        up.add_metric([], 0 if depths is None else 1)
        yield up
        if depths is not None:
            depth = GaugeMetricFamily("backhaul_queue_depth", "Jobs waiting in each queue", labels=["queue"])
            for name, count in depths.items():
                depth.add_metric([name], count)
            yield depth
        if workers is not None:
            states = GaugeMetricFamily("backhaul_workers", "RQ workers by state", labels=["state"])
            busy = sum(1 for w in workers if w["state"] == "busy")
            states.add_metric(["busy"], busy)
            states.add_metric(["idle"], len(workers) - busy)
            yield states

    def _durations(self) -> HistogramMetricFamily:
        """Duration histogram of finished jobs, by kind, computed in one query."""
        family = HistogramMetricFamily("backhaul_job_duration_seconds", "Time from start to finish",
                                       labels=["kind"])
        columns = [func.sum(case((JobEvent.seconds <= b, 1), else_=0)) for b in DURATION_BUCKETS]
        rows = db.session.execute(
            select(JobEvent.kind, func.count(), func.coalesce(func.sum(JobEvent.seconds), 0), *columns)
            .where(JobEvent.event.in_(["succeeded", "failed"]), JobEvent.seconds.is_not(None))
            .group_by(JobEvent.kind)
        ).all()
        for kind, count, total, *cumulative in rows:
            buckets = [(str(b), int(c or 0)) for b, c in zip(DURATION_BUCKETS, cumulative, strict=True)]
            buckets.append(("+Inf", int(count)))
            family.add_metric([kind], buckets, sum_value=float(total))
        return family
