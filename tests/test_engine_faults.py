"""The engine under the faults operators actually cause: kills with instant restarts, rq-dashboard
clicked through after a crash, retries across Redis flushes, repeated kills during a burst, dropped
database connections under page load, and a minute-long Redis outage.

Each test prints what it measured (``pytest -s``). Workers here run with the production heartbeat
staleness (60 s) unless said otherwise, so only the mechanism under test can make them fast.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import zlib
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import func, select, text

from scripts.mail_sink import free_port
from tests.conftest import wait_for
from tests.job_rows import (
    event_times,
    events,
    horse_pid,
    http_client,
    process_gone,
    report,
    row,
    submit,
    submit_exports_over_http,
)
from webapp.extensions import db
from webapp.models import Job, JobEvent, StoredFile
from webapp.models.job import utcnow

pytestmark = pytest.mark.slow

SLOW_STALENESS = {"JOB_STALE_SECONDS": "60"}
RETRY_SLACK_SECONDS = 15


def lateness(app, job_id) -> float:
    """Seconds between the moment the job's retry fell due and the start of the next attempt."""
    with app.app_context():
        retried = db.session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.event.in_(["retried", "interrupted"]))
            .order_by(JobEvent.at)).all()
    starts = event_times(app, job_id, "started")
    assert retried and len(starts) >= 2
    return (starts[-1] - retried[-1].at).total_seconds()


def test_a_whole_worker_killed_and_restarted_at_once_has_its_job_retried_within_seconds(app, users,
                                                                                        start_worker):
    """SIGKILL a worker and its work process, start a new one at once (what honcho or systemd do): the new
    worker sees that the old process is gone and retries the job, without waiting for the heartbeat to age."""
    doomed = start_worker("fast", env=SLOW_STALENESS)
    job_id = submit(app, users["alice"], {"seconds": 4})
    horse_pid(app, job_id)
    os.killpg(doomed.pid, signal.SIGKILL)
    killed = time.monotonic()
    start_worker("fast", env=SLOW_STALENESS)
    wait_for(lambda: row(app, job_id).attempts == 2 and row(app, job_id).status == "running",
             RETRY_SLACK_SECONDS, message="the retry to start")
    report("whole worker SIGKILL + instant restart -> retry started", time.monotonic() - killed)
    done = wait_for(lambda: (j := row(app, job_id)).status == "succeeded" and j, 30, message="the retry to finish")
    assert done.attempts == 2 and events(app, job_id, "succeeded") == 1


def test_killing_only_the_main_process_takes_its_work_process_along(app, users, start_worker):
    """SIGKILL the worker's main process alone: its work process dies with it (nothing finishes work that
    nobody records), and the job is retried by the next worker and succeeds once."""
    doomed = start_worker("fast", env=SLOW_STALENESS)
    job_id = submit(app, users["alice"], {"seconds": 6})
    horse = horse_pid(app, job_id)
    os.kill(doomed.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: process_gone(horse), 5, message="the orphaned work process to die")
    start_worker("fast", env=SLOW_STALENESS)
    wait_for(lambda: row(app, job_id).status == "succeeded", 40, message="the retry to finish")
    report("main process SIGKILL -> retried job done", time.monotonic() - killed)
    assert events(app, job_id, "succeeded") == 1
    assert events(app, job_id, "started") == 2
    assert row(app, job_id).result["steps"] == 60


def _dashboard_urls(redis: Redis) -> list[str]:
    """Every page and data URL of rq-dashboard, for every queue, registry and job there is."""
    urls = ["/rq/", "/rq/0/view/queues", "/rq/0/view/workers", "/rq/0/view/jobs", "/rq/0/data/queues.json",
            "/rq/0/data/workers.json"]
    for queue in ("fast", "default", "cpu"):
        for registry in ("queued", "started", "failed", "deferred", "finished", "scheduled", "canceled"):
            urls.append(f"/rq/0/view/jobs/{queue}/{registry}/8/asc/1")
            urls.append(f"/rq/0/data/jobs/{queue}/{registry}/8/asc/1.json")
            urls.append(f"/rq/0/data/jobs/{queue}/{registry}/8/dsc/1.json")
    for key in redis.scan_iter("rq:job:*"):
        job_id = key.decode().split(":", 2)[2]
        if ":" not in job_id:
            urls += [f"/rq/0/view/job/{job_id}", f"/rq/0/data/job/{job_id}.json"]
    return urls


def _click_through_dashboard(admin, redis: Redis, base: str = "http://localhost") -> None:
    """Open every rq-dashboard page as an admin, then requeue everything failed, as an operator might."""
    for url in _dashboard_urls(redis):
        assert admin.get(url).status_code < 500, url
    for queue in ("fast", "default", "cpu"):
        assert admin.post(f"/rq/requeue/{queue}", headers={"Origin": base}).status_code < 500


def _job_hashes_speak_json(redis: Redis) -> None:
    """Every RQ job hash in Redis decodes with our JSON serializer (meta, and the call itself)."""
    for key in redis.scan_iter("rq:job:*"):
        if redis.type(key) != b"hash":
            continue
        fields = redis.hgetall(key)
        if fields.get(b"meta"):
            json.loads(fields[b"meta"])
        if fields.get(b"data"):
            json.loads(zlib.decompress(fields[b"data"]))


def test_rq_dashboard_opened_after_a_crash_rewrites_nothing_and_retries_still_run(app, users, as_admin,
                                                                                  start_worker, test_env):
    """A worker dies mid-job; an admin clicks through every rq-dashboard page and requeues the failed lists;
    nothing is rewritten in pickle, and both the interrupted job and a flaky job's retry run on time."""
    redis = Redis.from_url(test_env["REDIS_URL"])
    doomed = start_worker("fast", reconciler=False)
    crashed = submit(app, users["alice"], {"seconds": 6}, "crashed")
    horse_pid(app, crashed)
    os.killpg(doomed.pid, signal.SIGKILL)
    flaky = submit(app, users["alice"], {"fail_attempts": 1}, "flaky")
    _click_through_dashboard(as_admin, redis)
    _job_hashes_speak_json(redis)
    start_worker("fast")
    # Click through again while the flaky job waits for its retry.
    wait_for(lambda: events(app, flaky, "retried") == 1, 30, message="the flaky job's first failure")
    _click_through_dashboard(as_admin, redis)
    _job_hashes_speak_json(redis)
    for job_id in (crashed, flaky):
        wait_for(lambda j=job_id: row(app, j).status == "succeeded", 40, message=f"{job_id} to succeed")
        assert events(app, job_id, "succeeded") == 1
    late = lateness(app, flaky)
    report("retry after rq-dashboard click-through: start after due", late)
    assert late < RETRY_SLACK_SECONDS


def test_a_retry_waiting_for_its_backoff_is_shown_and_survives_redis_being_flushed(app, users, as_alice,
                                                                                   start_worker, test_env):
    """A transient failure: page, JSON and CLI say when the next attempt is due; Redis loses everything
    meanwhile; the retry still runs when due (the row owns it, not Redis)."""
    start_worker("fast", env={"RETRY_BASE_SECONDS": "6"})
    job_id = submit(app, users["alice"], {"fail_attempts": 1}, "flaky")
    waiting = wait_for(lambda: (j := row(app, job_id)).next_retry_at is not None and j.status == "queued" and j,
                       30, message="the retry to be planned")
    due = waiting.next_retry_at
    assert due > utcnow(), "the backoff is still running"
    shown = as_alice.get(f"/jobs/{job_id}", headers={"Accept": "application/json"}).get_json()
    assert shown["next_retry_at"].startswith(due.strftime("%Y-%m-%dT%H:%M:%S"))
    assert f"{due:%H:%M:%S}" in as_alice.get(f"/jobs/{job_id}").get_data(as_text=True)
    cli = app.test_cli_runner().invoke(args=["jobs", "show", str(job_id)]).output
    assert due.strftime("%Y-%m-%dT%H:%M:%S") in cli
    Redis.from_url(test_env["REDIS_URL"]).flushdb()
    wait_for(lambda: row(app, job_id).status == "succeeded", 40, message="the retry to run after the flush")
    late = lateness(app, job_id) - (due - event_times(app, job_id, "retried")[0]).total_seconds()
    report("retry across FLUSHDB: start after due", late)
    assert late < RETRY_SLACK_SECONDS
    assert events(app, job_id, "succeeded") == 1


def test_overdue_work_is_detected_from_the_rows_and_run(app, users, as_admin, start_worker, test_env):
    """A retry whose due time passed with no worker up shows on /metrics and runs when a worker comes; a job
    RQ holds as 'scheduled' (nothing here runs RQ's scheduler) is handed over instead of waiting forever."""
    from rq import Queue
    from rq.job import Job as RQJob
    from rq.serializers import JSONSerializer

    overdue = submit(app, users["alice"], {}, "overdue retry")
    parked = submit(app, users["alice"], {}, "parked in RQ's schedule")
    redis = Redis.from_url(test_env["REDIS_URL"])
    with app.app_context():
        db.session.execute(text("UPDATE jobs SET next_retry_at = now() - interval '40 seconds' WHERE id = :id"),
                           {"id": overdue})
        parked_rq = row(app, parked).rq_job_id
        queue = Queue("fast", connection=redis, serializer=JSONSerializer)
        rq_job = RQJob.fetch(parked_rq, connection=redis, serializer=JSONSerializer)
        queue.remove(rq_job)
        queue.scheduled_job_registry.schedule(rq_job, utcnow() + timedelta(hours=1))
        rq_job.set_status("scheduled")
        db.session.execute(text("UPDATE jobs SET updated_at = now() - interval '5 minutes' WHERE id = :id"),
                           {"id": parked})
        db.session.commit()
    metrics = as_admin.get("/metrics").get_data(as_text=True)
    assert "backhaul_retries_overdue 1.0" in metrics
    age = float(re.search(r"^backhaul_retry_oldest_overdue_seconds (\S+)$", metrics, re.M).group(1))
    assert age >= 40
    started = time.monotonic()
    start_worker("fast")
    for job_id in (overdue, parked):
        wait_for(lambda j=job_id: row(app, j).status == "succeeded", RETRY_SLACK_SECONDS,
                 message=f"{job_id} to be handed over and run")
    report("overdue work handed over and done after a worker started", time.monotonic() - started)
    assert "backhaul_retries_overdue 0.0" in as_admin.get("/metrics").get_data(as_text=True)


def _storage_files(root: Path) -> set[str]:
    """Keys of every file in the local storage folder (temporary parts excluded)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".part-")}


def test_exports_under_repeated_worker_kills_each_succeed_once_and_leave_no_stray_file(app, users, live_server,
                                                                                      start_worker, test_env):
    """200 exports from 20 clients while one of two workers is SIGKILLed every few seconds and restarted at
    once: every export succeeds exactly once, has exactly one file, and no file is left that no row names."""
    per_client, clients = 10, 20
    workers = [start_worker("default"), start_worker("default")]
    stop = threading.Event()
    kills = 0

    def killer() -> None:
        nonlocal kills
        while not stop.wait(3.0):
            victim = workers[kills % 2]
            os.killpg(victim.pid, signal.SIGKILL)
            workers[kills % 2] = start_worker("default")
            kills += 1

    # Earlier tests of the session share the storage folder: count only what this test adds.
    before = _storage_files(Path(test_env["STORAGE_DIR"]))
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        accepted = submit_exports_over_http(live_server, clients, per_client)
        assert accepted == per_client * clients

        def succeeded() -> int:
            with app.app_context():
                return db.session.scalar(select(func.count()).select_from(Job).where(Job.status == "succeeded"))

        wait_for(lambda: succeeded() >= 100 or kills >= 4, 120, every=1, message="kills during the burst")
    finally:
        stop.set()
        thread.join()
    wait_for(lambda: succeeded() == accepted, 180, every=1, message="every export to succeed")
    with app.app_context():
        per_job = dict(db.session.execute(
            select(JobEvent.job_id, func.count()).where(JobEvent.event == "succeeded").group_by(JobEvent.job_id)
        ).all())
        starts = Counter(dict(db.session.execute(
            select(JobEvent.job_id, func.count()).where(JobEvent.event == "started").group_by(JobEvent.job_id)
        ).all()).values())
        files_per_job = Counter(dict(db.session.execute(
            select(StoredFile.job_id, func.count()).group_by(StoredFile.job_id)).all()).values())
        keys = set(db.session.scalars(select(StoredFile.key)))
    print(f"\nKILL BURST: {kills} kills; jobs by number of starts {dict(starts)}; files per job {dict(files_per_job)}")
    assert kills >= 2, "the burst saw kills"
    assert len(per_job) == accepted and set(per_job.values()) == {1}, "each export succeeded exactly once"
    assert files_per_job == Counter({1: accepted}), "each export has exactly one file"
    on_disk = _storage_files(Path(test_env["STORAGE_DIR"])) - before
    assert on_disk == keys, f"stray files: {sorted(on_disk - keys)[:5]}"


def test_pages_answer_while_postgres_drops_connections(app, users, live_server, start_worker):
    """Every connection of ours is terminated twice a second for ten seconds while pages are read and forms
    sent: answers are pages or a calm 503, never a 500, and every accepted submit is whole."""

    start_worker("default")
    job_id = submit(app, users["alice"], {}, "seen while dropping")
    codes: Counter = Counter()
    accepted = 0
    stop = threading.Event()
    lock = threading.Lock()

    def terminate_backends() -> None:
        with app.app_context():
            while not stop.wait(0.5):
                db.session.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
                db.session.commit()

    def browse(n: int) -> None:
        nonlocal accepted
        opener, token = wait_for(lambda: _logged_in(live_server), 30, message="a log-in between drops")
        paths = ["/jobs/", f"/jobs/{job_id}", f"/jobs/{job_id}/status", "/exports/new"]
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 4 == n % 4:
                    body = urllib.parse.urlencode({"date_from": "1990-01-01", "date_to": "1990-01-02",
                                                   "status": "", "csrf_token": token}).encode()
                    with opener.open(f"{live_server}/exports/new", body, timeout=30) as response:
                        code = response.status
                        with lock:
                            accepted += "/jobs/" in response.url
                else:
                    with opener.open(f"{live_server}{paths[i % len(paths)]}", timeout=30) as response:
                        code = response.status
            except urllib.error.HTTPError as exc:
                code = exc.code
            with lock:
                codes[code] += 1

    killer = threading.Thread(target=terminate_backends, daemon=True)
    browsers = [threading.Thread(target=browse, args=(n,), daemon=True) for n in range(6)]
    for thread in [killer, *browsers]:
        thread.start()
    time.sleep(10)
    stop.set()
    for thread in [killer, *browsers]:
        thread.join(40)
    print(f"\nDROPPED CONNECTIONS: answers {dict(codes)}; {accepted} submits accepted")
    assert codes[500] == 0
    assert set(codes) <= {200, 286, 503}
    assert codes[200] >= 20, "pages were read during the drops"
    with app.app_context():
        rows = db.session.scalar(select(func.count()).select_from(Job).where(Job.title.like("Orders 1990%")))
        without_event = db.session.scalar(text(
            "SELECT count(*) FROM jobs j WHERE NOT EXISTS "
            "(SELECT 1 FROM job_events e WHERE e.job_id = j.id AND e.event = 'submitted')"))
    assert rows >= accepted and without_event == 0


def test_the_first_job_starts_within_seconds_after_a_minute_long_redis_outage(app, users, tmp_path, as_alice,
                                                                              start_worker):
    """Redis away for 60 s (and back empty): an export sent meanwhile waits with a clear message, and it is
    running within 10 s of Redis returning."""
    from tests.conftest import Browserless
    from webapp import create_app

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server_args = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    server = subprocess.Popen(server_args, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: _pings(url), 10, message="the private Redis")
        web = create_app({"TESTING": True, "REDIS_URL": url})
        client = Browserless(web.test_client())
        client.login("alice@example.com")
        start_worker("default", env={"REDIS_URL": url})
        time.sleep(2)
        server.terminate()
        server.wait(10)
        response = client.post("/exports/new", {"date_from": "2026-01-01", "date_to": "2026-01-02", "status": ""},
                               form_page="/exports/new")
        job_id = response.headers["Location"].rsplit("/", 1)[-1]
        assert "Waiting for the queue" in client.get(f"/jobs/{job_id}").get_data(as_text=True)
        time.sleep(60)
        server = subprocess.Popen(server_args, stdout=subprocess.DEVNULL)
        back = time.monotonic()
        wait_for(lambda: row(app, job_id).status in ("running", "succeeded"), 10,
                 message="the export to start after Redis came back")
        report("60 s Redis outage -> first job started", time.monotonic() - back)
        wait_for(lambda: row(app, job_id).status == "succeeded", 30, message="the export to finish")
    finally:
        server.terminate()
        server.wait(10)


def _logged_in(base: str):
    """A logged-in HTTP client, or None when a dropped connection answered 503 (try again)."""
    try:
        return http_client(base)
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise
        return None


def _pings(url: str) -> bool:
    """True when Redis at ``url`` answers."""
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:  # noqa: BLE001
        return False
