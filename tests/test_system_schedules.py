"""System schedules every deployment runs without anyone asking (the nightly retention prune)."""

from __future__ import annotations

import time

from sqlalchemy import select

from tests.conftest import wait_for
from webapp.extensions import db
from webapp.models import Schedule


def system_schedules(app) -> list[tuple[str, str, str, bool]]:
    """(kind, cron, tz, paused) of every system schedule."""
    with app.app_context():
        rows = db.session.execute(select(Schedule.kind, Schedule.cron, Schedule.tz, Schedule.paused)
                                  .where(Schedule.system.is_(True))).all()
        db.session.commit()
        return [tuple(row) for row in rows]


def test_workers_create_the_nightly_prune_once_and_an_admin_sees_it(app, users, as_admin, as_alice, start_worker):
    """Two workers starting together create one nightly prune, owned by the first admin, on the admin's page."""
    on = {"SYSTEM_SCHEDULES": "true"}
    start_worker("fast", env=on)
    start_worker("fast", env=on)
    wait_for(lambda: system_schedules(app), 20, message="the system schedule")
    start_worker("fast", env=on)
    time.sleep(3)  # the third worker's clock has had its first look
    assert system_schedules(app) == [("prune_jobs", "30 3 * * *", "UTC", False)]
    with app.app_context():
        owner = db.session.scalar(select(Schedule.owner_id).where(Schedule.system.is_(True)))
    assert owner == users["root"]
    assert "retention prune" in as_admin.get("/schedules/").get_data(as_text=True).lower()
    assert "retention prune" not in as_alice.get("/schedules/").get_data(as_text=True).lower()


def test_without_an_admin_no_system_schedule_is_made(app, start_worker):
    """A schedule needs an owner: before the first admin exists, nothing is created (and nothing fails)."""
    worker = start_worker("fast", env={"SYSTEM_SCHEDULES": "true"})
    wait_for(lambda: "serving" in worker.output(), 20, message="the worker to start")
    time.sleep(2)
    assert system_schedules(app) == []
