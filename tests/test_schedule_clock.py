"""The schedule clock with real workers: one run per slot with three workers, a real minute slot, the
firing process SIGKILLed before and after its commit, Redis flushed, and a catch-up after downtime."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta

from redis import Redis
from sqlalchemy import func, select

from tests.conftest import wait_for
from webapp import scheduling
from webapp.extensions import db
from webapp.models import Job, Schedule, ScheduleRun


def runs(app, schedule_id: int) -> list[tuple]:
    """(slot, job id, job status, missed, catch-up) of each run, oldest slot first."""
    with app.app_context():
        rows = db.session.execute(
            select(ScheduleRun.slot_at, ScheduleRun.job_id, Job.status, ScheduleRun.missed, ScheduleRun.catch_up)
            .outerjoin(Job, Job.id == ScheduleRun.job_id)
            .where(ScheduleRun.schedule_id == schedule_id).order_by(ScheduleRun.slot_at)
        ).all()
        db.session.commit()
        return [tuple(row) for row in rows]


def job_count(app) -> int:
    """Job rows in the database."""
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(Job))
        db.session.commit()
        return count


def due_now(app, owner_id: int, *, minutes_ago: int = 0) -> int:
    """A minutely self-test schedule whose current minute's slot (or one ``minutes_ago`` earlier) is due."""
    with app.app_context():
        schedule = scheduling.create_schedule("selftest", owner_id, {}, "* * * * *", "UTC")
        slot = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
        schedule.next_run_at = slot
        db.session.commit()
        return schedule.id


def pause(app, schedule_id: int) -> None:
    """Stop the schedule so later minutes do not add runs while the test checks."""
    with app.app_context():
        scheduling.pause(schedule_id)


def test_three_workers_fire_a_real_minute_slot_exactly_once(app, users, start_worker, capsys):
    """Three workers each run a clock; the next minute's slot becomes one job, fired within seconds."""
    workers = [start_worker() for _ in range(3)]
    # The schedule is made once the clocks run, so the lag measured is the clock's, not a worker's start-up.
    wait_for(lambda: all(" serving " in w.output() for w in workers), timeout=60, message="three workers")
    with app.app_context():
        schedule_id = scheduling.create_schedule("selftest", users["root"], {}, "* * * * *", "UTC").id
        first_slot = db.session.get(Schedule, schedule_id).next_run_at
    seconds_left = (first_slot - datetime.now(UTC)).total_seconds()
    done = wait_for(lambda: [r for r in runs(app, schedule_id) if r[0] == first_slot and r[2] == "succeeded"],
                    timeout=seconds_left + 45, message="the minute slot's job to succeed")
    pause(app, schedule_id)
    assert len(done) == 1
    assert [r for r in runs(app, schedule_id) if r[0] == first_slot] == done
    with app.app_context():
        job = db.session.get(Job, done[0][1])
        assert db.session.scalar(select(func.count()).select_from(Job).where(Job.created_at < first_slot)) == 0
        lag = (job.created_at - first_slot).total_seconds()
        assert job.title.startswith("Scheduled self-test — ")
    # The 5-second target holds on an idle machine (docs/schedules.md); a busy CI box gets more room.
    assert 0 <= lag < 30
    with capsys.disabled():
        print(f"\n  minute slot fired {lag:.3f} s after the slot with three workers")


def test_the_firing_process_killed_before_its_commit_leaves_nothing_and_the_slot_fires_once_later(
        app, users, start_worker):
    """SIGKILL while the firing transaction is open: no run, no job; a restarted worker fires the slot once."""
    schedule_id = due_now(app, users["root"])
    stalled = start_worker(env={"BACKHAUL_CLOCK_STALL": "before-commit:60"})
    wait_for(lambda: "schedule clock stalled before-commit" in stalled.output(), timeout=60,
             message="the clock to stall before its commit")
    stalled.stop(signal.SIGKILL)
    assert runs(app, schedule_id) == [] and job_count(app) == 0
    start_worker()
    fired = wait_for(lambda: [r for r in runs(app, schedule_id) if r[2] == "succeeded"], timeout=60,
                     message="the slot to run after the restart")
    pause(app, schedule_id)
    slot = fired[0][0]
    assert [r for r in runs(app, schedule_id) if r[0] == slot] == fired[:1]
    assert job_count(app) == len([r for r in runs(app, schedule_id) if r[1] is not None])


def test_the_firing_process_killed_after_its_commit_still_runs_the_slot_once(app, users, start_worker):
    """SIGKILL between the commit and the hand-over to Redis: the reconciler hands the queued row over; the
    restarted clock does not fire the slot again."""
    schedule_id = due_now(app, users["root"])
    stalled = start_worker(env={"BACKHAUL_CLOCK_STALL": "after-commit:60"})
    wait_for(lambda: "schedule clock stalled after-commit" in stalled.output(), timeout=60,
             message="the clock to stall after its commit")
    stalled.stop(signal.SIGKILL)
    [(slot, job_id, status, _missed, _catch_up)] = runs(app, schedule_id)
    assert status == "queued"
    start_worker()
    wait_for(lambda: runs(app, schedule_id)[0][2] == "succeeded", timeout=90,
             message="the reconciler to hand the job over and a worker to run it")
    pause(app, schedule_id)
    assert [r for r in runs(app, schedule_id) if r[0] == slot][0][1] == job_id
    assert len([r for r in runs(app, schedule_id) if r[0] == slot]) == 1
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Job).where(Job.created_at < slot
                                                                               + timedelta(seconds=60))) == 1


def test_redis_flushed_after_firing_still_gives_one_run(app, users, start_worker, test_env):
    """The slot is recorded in PostgreSQL: flushing Redis loses only the queue entry, which is handed over again."""
    schedule_id = due_now(app, users["root"])
    # A clock that serves only the cpu queue: the fast self-test waits in Redis.
    start_worker("cpu")
    [(slot, job_id, status, _missed, _catch_up)] = wait_for(lambda: runs(app, schedule_id), timeout=60,
                                                            message="the slot to fire")
    pause(app, schedule_id)
    assert status == "queued"
    Redis.from_url(test_env["REDIS_URL"]).flushdb()
    start_worker("fast")
    wait_for(lambda: runs(app, schedule_id)[0][2] == "succeeded", timeout=90,
             message="the job to be handed over again and run")
    assert [r[:2] for r in runs(app, schedule_id)] == [(slot, job_id)] and job_count(app) == 1


def test_after_downtime_missed_slots_are_shown_and_one_catch_up_runs(app, users, start_worker, as_admin):
    """Ten minutes with no worker: the clock that starts runs one catch-up and records the other slots as missed."""
    schedule_id = due_now(app, users["root"], minutes_ago=10)
    start_worker()
    ran = wait_for(lambda: [r for r in runs(app, schedule_id) if r[2] == "succeeded"], timeout=60,
                   message="the catch-up run")
    pause(app, schedule_id)
    all_runs = runs(app, schedule_id)
    catch_up = [r for r in all_runs if r[4]]
    missed = [r for r in all_runs if r[3]]
    assert catch_up == ran[:1] and len(missed) >= 10 and all(r[1] is None for r in missed)
    page = as_admin.get(f"/schedules/{schedule_id}").get_data(as_text=True)
    assert "catch-up" in page and page.count(">missed<") == len(missed)
