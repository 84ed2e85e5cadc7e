"""Helpers for tests that watch job rows while real processes work on them."""

from __future__ import annotations

import os
import uuid

from sqlalchemy import func, select

from tests.conftest import wait_for
from webapp import queueing
from webapp.extensions import db
from webapp.models import Job, JobEvent


def submit(app, owner_id: int, params: dict, title: str = "selftest") -> uuid.UUID:
    """Submit a self-test job and return its id."""
    with app.app_context():
        return queueing.submit("selftest", owner_id, params, title).id


def row(app, job_id) -> Job:
    """A fresh copy of the job row."""
    with app.app_context():
        db.session.expire_all()
        job = db.session.get(Job, job_id)
        db.session.expunge(job)
        return job


def events(app, job_id, event: str) -> int:
    """How many times ``event`` happened to the job."""
    with app.app_context():
        return db.session.scalar(
            select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id, JobEvent.event == event))


def event_times(app, job_id, event: str) -> list:
    """When ``event`` happened to the job, oldest first."""
    with app.app_context():
        return list(db.session.scalars(
            select(JobEvent.at).where(JobEvent.job_id == job_id, JobEvent.event == event).order_by(JobEvent.at)))


def wait_running(app, job_id) -> None:
    """Wait until a worker has claimed the job (a worker starting on a busy machine may take a while)."""
    wait_for(lambda: row(app, job_id).status == "running", 60, message="the job to start")


def horse_pid(app, job_id) -> int:
    """The pid of the work process running the job (joins the worker's name with the first heartbeat)."""
    job = wait_for(lambda: (j := row(app, job_id)).status == "running" and "/" in (j.worker_name or "") and j, 60,
                   message="the job to start")
    return int(job.worker_name.rsplit("/", 1)[1])


def process_gone(pid: int) -> bool:
    """True when no live process has this pid (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except ProcessLookupError:
        return True


def alive(pid: int) -> bool:
    """The opposite of process_gone."""
    return not process_gone(pid) and os.path.exists(f"/proc/{pid}")


def report(case: str, seconds: float) -> None:
    """Print a measured time for the note (see them with ``pytest -s``)."""
    print(f"\nMEASURED {case}: {seconds:.1f} s")


def http_client(base: str):
    """A cookie-keeping HTTP client logged in as alice; returns (opener, csrf token)."""
    import http.cookiejar
    import re
    import urllib.parse
    import urllib.request

    from tests.conftest import PASSWORD

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = opener.open(f"{base}/login", timeout=30).read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"email": "alice@example.com", "password": PASSWORD, "csrf_token": token})
    opener.open(f"{base}/login", body.encode(), timeout=30).read()
    page = opener.open(f"{base}/exports/new", timeout=30).read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return opener, token


def submit_exports_over_http(base: str, clients: int, per_client: int) -> int:
    """``clients`` logged-in HTTP clients each send ``per_client`` export forms at once; how many were accepted."""
    import urllib.parse
    from concurrent.futures import ThreadPoolExecutor

    def client_run(_n: int) -> int:
        opener, token = http_client(base)
        ok = 0
        for _ in range(per_client):
            body = urllib.parse.urlencode({"date_from": "1990-01-01", "date_to": "1990-01-02", "status": "",
                                           "csrf_token": token})
            with opener.open(f"{base}/exports/new", body.encode(), timeout=30) as response:
                ok += response.status == 200 and "/jobs/" in response.url
        return ok

    with ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(client_run, range(clients)))
