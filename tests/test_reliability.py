"""Fault injection with real processes and signals: nothing lost, nothing stuck, nothing done twice.

Each test prints its measured time to recovery (see them with ``pytest -s``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pytest
from redis import Redis
from sqlalchemy import func, select, text

from scripts.mail_sink import free_port
from tests.conftest import wait_for
from tests.job_rows import events, horse_pid, report, row, submit, submit_exports_over_http, wait_running
from webapp import queueing
from webapp.extensions import db
from webapp.models import Job, JobEvent

pytestmark = pytest.mark.slow


def test_redis_losing_everything_loses_no_job(app, users, start_worker, test_env):
    """FLUSHDB with jobs queued and running: all are handed over again and finish, each once."""
    start_worker("fast")
    running = submit(app, users["alice"], {"seconds": 4})
    wait_running(app, running)
    queued = [submit(app, users["alice"], {"seconds": 0.2}, f"q{i}") for i in range(5)]
    Redis.from_url(test_env["REDIS_URL"]).flushdb()
    flushed = time.monotonic()
    for job_id in [running, *queued]:
        wait_for(lambda j=job_id: row(app, j).status == "succeeded", 40, message=f"{job_id} to finish")
    report("redis flushed", time.monotonic() - flushed)
    for job_id in [running, *queued]:
        assert events(app, job_id, "succeeded") == 1
    assert events(app, running, "started") == 1, "the job running during the flush was not run twice"


def test_a_killed_work_process_is_retried_and_finishes(app, users, start_worker):
    """SIGKILL the work process: the job is interrupted, its retry is handed over at once, and it completes."""
    start_worker("fast")
    job_id = submit(app, users["alice"], {"seconds": 3})
    os.kill(horse_pid(app, job_id), signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: row(app, job_id).status == "succeeded", 30, message="the retry to finish")
    report("work process SIGKILL", time.monotonic() - killed)
    assert row(app, job_id).attempts == 2
    with app.app_context():
        reason = db.session.scalar(select(JobEvent.detail).where(JobEvent.job_id == job_id,
                                                                 JobEvent.event == "interrupted"))
    assert reason == "Interrupted: the work process was killed (out of memory or stopped)"


def test_a_job_killed_on_every_attempt_ends_failed_not_running(app, users, start_worker):
    """After its last attempt a job whose process keeps dying is failed with a clear message."""
    start_worker("fast")
    job_id = submit(app, users["alice"], {"seconds": 30})
    for _attempt in range(3):
        pid = horse_pid(app, job_id)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda p=pid: row(app, job_id).status != "running" or row(app, job_id).worker_name.endswith(
            f"/{p}") is False, 30, message="the next attempt")
    final = wait_for(lambda: (j := row(app, job_id)).status == "failed" and j, 30, message="the job to fail")
    assert "gave up after 3 attempts" in final.error


def test_a_dead_worker_host_is_noticed_and_another_worker_finishes_the_job(app, users, start_worker):
    """SIGKILL the whole worker (parent and work process): another worker's reconciler hands the job over."""
    doomed = start_worker("fast", reconciler=False)
    job_id = submit(app, users["alice"], {"seconds": 20})
    pid = horse_pid(app, job_id)
    os.kill(pid, signal.SIGKILL)
    os.killpg(doomed.pid, signal.SIGKILL)
    killed = time.monotonic()
    start_worker("fast")
    wait_for(lambda: row(app, job_id).status == "succeeded", 60, message="another worker to finish the job")
    report("whole worker SIGKILL", time.monotonic() - killed)


def test_sigterm_lets_a_short_job_finish(app, users, start_worker):
    """A deploy's SIGTERM: a job that ends within the grace period finishes, then the worker exits."""
    worker = start_worker("fast")
    job_id = submit(app, users["alice"], {"seconds": 1})
    wait_running(app, job_id)
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.proc.wait(20) == 0
    assert row(app, job_id).status == "succeeded"


def test_sigterm_hands_a_long_job_back_after_the_grace_period(app, users, start_worker):
    """A job still running when the grace period ends goes back to the queue and runs again elsewhere."""
    worker = start_worker("fast")
    job_id = submit(app, users["alice"], {"seconds": 8})
    wait_running(app, job_id)
    os.kill(worker.pid, signal.SIGTERM)
    stopped = time.monotonic()
    worker.proc.wait(30)
    handed = row(app, job_id)
    assert handed.status == "queued" and "Handed back" in handed.message
    assert handed.attempts == 0, "a deploy does not use up an attempt"
    start_worker("fast")
    wait_for(lambda: row(app, job_id).status == "succeeded", 40, message="the handed-back job to finish")
    report("SIGTERM hand-back", time.monotonic() - stopped)


def test_a_job_over_its_time_limit_is_stopped(app, users, start_worker, monkeypatch):
    """A job past its kind's time limit fails with 'Took longer than ...' and the worker carries on."""
    monkeypatch.setitem(app.config["JOB_TIMEOUTS"], "selftest", 2)
    start_worker("fast", env={"JOB_TIMEOUT_SELFTEST": "2"})
    slow = submit(app, users["alice"], {"busy_seconds": 30})
    final = wait_for(lambda: (j := row(app, slow)).status == "failed" and j, 30, message="the time limit")
    assert final.error == "Took longer than 2 seconds and was stopped."
    after = submit(app, users["alice"], {"seconds": 0.1})
    wait_for(lambda: row(app, after).status == "succeeded", 20, message="the worker to carry on")


def test_a_job_over_its_memory_cap_fails_alone(app, users, start_worker):
    """Allocating past the kind's memory cap fails that job with a clear message; the next job runs."""
    start_worker("fast")
    hog = submit(app, users["alice"], {"allocate_mb": 2048})
    final = wait_for(lambda: (j := row(app, hog)).status == "failed" and j, 30, message="the memory cap")
    assert "Ran out of memory" in final.error
    after = submit(app, users["alice"], {"seconds": 0.1})
    wait_for(lambda: row(app, after).status == "succeeded", 20, message="the worker to carry on")


def test_cancel_stops_a_job_that_never_checks_in_after_the_grace_period(app, users, start_worker):
    """A running job that ignores cancel is stopped hard by the reconciler; the row says cancelled."""
    start_worker("fast")
    job_id = submit(app, users["alice"], {"busy_seconds": 60})
    wait_running(app, job_id)
    with app.app_context():
        queueing.cancel(job_id)
    asked = time.monotonic()
    final = wait_for(lambda: (j := row(app, job_id)).status == "cancelled" and j, 30, message="the hard stop")
    report("hard cancel", time.monotonic() - asked)
    assert "Cancelled" in final.message


def test_dropped_database_connections_are_survived(app, users, start_worker):
    """pg_terminate_backend on every connection of ours mid-job: the job is retried and completes."""
    start_worker("fast")
    job_id = submit(app, users["alice"], {"seconds": 4})
    wait_running(app, job_id)
    with app.app_context():
        db.session.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        db.session.commit()
    dropped = time.monotonic()
    wait_for(lambda: row(app, job_id).status == "succeeded", 40, message="the job to finish after the drop")
    report("postgres connections dropped", time.monotonic() - dropped)


def test_redis_away_for_a_while_then_everything_completes(app, users, tmp_path, as_alice, start_worker):
    """Redis down: pages serve, submits are kept; Redis back (empty): workers reconnect and all jobs finish."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server_args = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                   "--dir", str(tmp_path)]
    server = subprocess.Popen(server_args, stdout=subprocess.DEVNULL)
    wait_for(lambda: _pings(url), 10, message="the private Redis")
    from tests.conftest import Browserless
    from webapp import create_app

    web = create_app({"TESTING": True, "REDIS_URL": url})
    client = Browserless(web.test_client())
    client.login("alice@example.com")
    start_worker("fast", "default", env={"REDIS_URL": url})
    try:
        server.terminate()
        server.wait(10)
        down = time.monotonic()
        assert client.get("/jobs/").status_code == 200
        response = client.post("/exports/new", {"date_from": "2026-01-01", "date_to": "2026-01-02", "status": ""},
                               form_page="/exports/new")
        assert response.status_code == 303, response.get_data(as_text=True)
        job_id = uuid.UUID(response.headers["Location"].rsplit("/", 1)[-1])
        assert "Waiting for the queue" in client.get(f"/jobs/{job_id}").get_data(as_text=True)
        time.sleep(5)
        server = subprocess.Popen(server_args, stdout=subprocess.DEVNULL)
        wait_for(lambda: row(app, job_id).status == "succeeded", 60, message="the export after Redis came back")
        report("redis outage (after restart)", time.monotonic() - down - 5)
    finally:
        server.terminate()
        server.wait(10)


def test_a_job_running_when_redis_goes_away_is_recorded_without_it(app, users, tmp_path, start_worker):
    """Redis gone mid-job and not back: the job finishes, its row says succeeded, and it ran once."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: _pings(url), 10, message="the private Redis")
        from webapp import create_app

        private = create_app({"TESTING": True, "REDIS_URL": url})
        worker = start_worker("fast", reconciler=False, env={"REDIS_URL": url})
        job_id = submit(private, users["alice"], {"seconds": 3})
        wait_running(app, job_id)
        server.terminate()
        server.wait(10)
        done = wait_for(lambda: (j := row(app, job_id)).status == "succeeded" and j, 30,
                        message="the result recorded while Redis is away")
        assert done.attempts == 1 and done.result["steps"] == 30
        assert events(app, job_id, "started") == 1 and events(app, job_id, "succeeded") == 1
        assert worker.proc.poll() is None, "the worker waits for Redis instead of exiting"
    finally:
        server.terminate()
        server.wait(10)


def _pings(url: str) -> bool:
    """True when Redis at ``url`` answers."""
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:  # noqa: BLE001
        return False


def test_a_burst_of_1000_submits_from_20_clients_runs_each_job_exactly_once(app, users, live_server, start_worker):
    """1,000 exports submitted over HTTP by 20 concurrent clients all finish, each started and finished once."""
    per_client, clients = 50, 20
    start_worker("default")
    start_worker("default")
    started = time.monotonic()
    accepted = submit_exports_over_http(live_server, clients, per_client)
    assert accepted == per_client * clients
    submitted = time.monotonic()

    def all_done():
        with app.app_context():
            return db.session.scalar(select(func.count()).select_from(Job).where(Job.status == "succeeded")) == 1000

    wait_for(all_done, 240, every=1, message="all 1,000 jobs to finish")
    print(f"\nBURST: 1000 submits in {submitted - started:.1f} s, all done {time.monotonic() - started:.1f} s")
    with app.app_context():
        per_job = db.session.execute(
            select(JobEvent.event, func.count(JobEvent.job_id.distinct()), func.count())
            .where(JobEvent.event.in_(["started", "succeeded"])).group_by(JobEvent.event)
        ).all()
        assert {event: (jobs, total) for event, jobs, total in per_job} == {
            "started": (1000, 1000), "succeeded": (1000, 1000)}


def test_results_expire_quickly_and_failures_are_kept_for_days(app, users, burst_worker, test_env):
    """Redis keeps a finished job for minutes and a failed one for days, so its memory stays flat."""
    ok = submit(app, users["alice"], {})
    bad = submit(app, users["alice"], {"fail_attempts": 99})
    with app.app_context():
        db.session.execute(text("UPDATE jobs SET max_attempts = 1 WHERE id = :id"), {"id": bad})
        db.session.commit()
    burst_worker("fast")
    redis = Redis.from_url(test_env["REDIS_URL"])
    ok_key, bad_key = f"rq:job:{row(app, ok).rq_job_id}", f"rq:job:{row(app, bad).rq_job_id}"
    assert 0 < redis.ttl(ok_key) <= app.config["RESULT_TTL_SECONDS"]
    assert app.config["RESULT_TTL_SECONDS"] < redis.ttl(bad_key) <= app.config["FAILURE_TTL_SECONDS"]


def test_a_worker_recycles_itself_after_max_jobs_and_keeps_serving(app, users, start_worker):
    """With --max-jobs 2 the worker re-executes itself (same pid, fresh memory) and goes on working."""
    worker = start_worker("fast", args=("--max-jobs", "2"))
    jobs = [submit(app, users["alice"], {}, f"r{i}") for i in range(5)]
    for job_id in jobs:
        wait_for(lambda j=job_id: row(app, j).status == "succeeded", 40, message="recycled worker to finish")
    assert worker.proc.poll() is None, "still running after recycling"
    assert worker.output().count("worker restarting") >= 2
