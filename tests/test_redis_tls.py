"""Heroku Redis: ``rediss://`` with a self-signed certificate, and REDIS_TLS_URL set beside REDIS_URL.

Every process of the product (gunicorn, a long-running worker with its reconciler,
rq-dashboard, the CLI, scripts/bootstrap.py) is run against a TLS-only redis-server
that the test starts with a certificate it generates, as an operator would deploy it.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from redis import Redis

from tests.conftest import PASSWORD, ROOT, Browserless, Process, _free_port, wait_for
from tests.job_rows import row
from webapp import create_app

TERMINAL = ("succeeded", "failed", "cancelled")
VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED"
# Nothing listens here: a REDIS_URL that anything still reading it would fail on.
DEAD_URL = "redis://127.0.0.1:1/0"
# Heroku's Redis URLs carry a password: no log, page or terminal line may show it.
PASSWORD_IN_URL = "tls-test-" + secrets.token_hex(8)


@pytest.fixture
def tls_redis(tmp_path) -> Iterator[str]:
    """A redis-server as Heroku's: TLS only, a self-signed certificate made now, a password; yields its URL."""
    cert, key = tmp_path / "redis-cert.pem", tmp_path / "redis-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = _free_port()
    server = Process(["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                      "--tls-key-file", str(key), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
                      "--requirepass", PASSWORD_IN_URL, "--dir", str(tmp_path)], tmp_path / "redis-server.log")
    url = f"rediss://:{PASSWORD_IN_URL}@127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _answers(url), 20, message="the TLS-only redis-server")
        yield url
    finally:
        server.stop()


def _tls_client(url: str) -> Redis:
    """The test's own client for the TLS server (not the product's factory, which is under test)."""
    return Redis.from_url(url, ssl_cert_reqs=None, socket_connect_timeout=2, socket_timeout=5)


def _answers(url: str) -> bool:
    """True when the TLS server at ``url`` answers a PING."""
    try:
        with _tls_client(url) as conn:
            return bool(conn.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _plain_tcp_is_refused(url: str) -> bool:
    """True when the server at ``url`` refuses to talk plain RESP (it is TLS-only)."""
    plain = url.replace("rediss://", "redis://", 1)
    try:
        with Redis.from_url(plain, socket_connect_timeout=2, socket_timeout=2) as conn:
            conn.ping()
    except Exception:  # noqa: BLE001 - any failure means plain text was not served
        return True
    return False


@pytest.fixture
def serve(app, tmp_path) -> Iterator:
    """``serve(env)``: gunicorn serving wsgi:app with ``env`` on a free port; (base URL, process), stopped after."""
    started: list[Process] = []

    def start(env: dict[str, str]) -> tuple[str, Process]:
        port = _free_port()
        proc = Process([sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}", "--workers",
                        "1", "--timeout", "30"], tmp_path / f"gunicorn{len(started)}.log", env)
        started.append(proc)

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 60, message="gunicorn to listen")
        return f"http://127.0.0.1:{port}", proc

    yield start
    for proc in started:
        proc.stop()


def _token(page: str) -> str:
    """The CSRF token in a page's form."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token on the page"
    return match.group(1)


def _log_in(base: str, email: str, password: str = PASSWORD):
    """A cookie-keeping HTTP client logged in through the real login form (None when the login was refused)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    token = _token(opener.open(f"{base}/login", timeout=30).read().decode())
    body = urllib.parse.urlencode({"email": email, "password": password, "csrf_token": token}).encode()
    try:
        with opener.open(f"{base}/login", body, timeout=30) as response:
            return None if urllib.parse.urlsplit(response.url).path == "/login" else opener
    except urllib.error.HTTPError as exc:
        exc.close()
        return None


def _export_through_the_form(base: str, opener) -> str:
    """Submit an orders export through the web form; the job id the page redirected to."""
    token = _token(opener.open(f"{base}/exports/new", timeout=30).read().decode())
    body = urllib.parse.urlencode({"date_from": "2026-01-01", "date_to": "2026-01-31", "status": "",
                                   "csrf_token": token}).encode()
    with opener.open(f"{base}/exports/new", body, timeout=30) as response:
        assert "/jobs/" in response.url, response.url
        return response.url.rsplit("/", 1)[-1]


def _readyz(base: str) -> tuple[int, dict]:
    """/readyz's status code and JSON body."""
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get(opener, url: str) -> tuple[int, str]:
    """Status and body of a GET (errors included)."""
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _finishes(app, job_id: str, worker: Process, timeout: float = 90) -> str:
    """Wait for the job row to reach a terminal status; that status (fails at once if the worker cannot connect)."""

    def finished() -> str | None:
        if VERIFY_FAILED in worker.output():
            pytest.fail("the worker refuses the self-signed certificate:\n" + worker.output()[-3000:])
        status = row(app, job_id).status
        return status if status in TERMINAL else None

    return wait_for(finished, timeout, message=f"job {job_id} to finish")


def _flask(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``flask --app wsgi ARGS`` as a real subprocess with ``env`` on top of the test environment."""
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def test_web_worker_dashboard_cli_and_bootstrap_all_work_on_a_tls_only_redis(app, users, test_env, tls_redis, serve,
                                                                             start_worker):
    """rediss:// with a self-signed certificate everywhere: /readyz is green, an export sent through the form and
    one the CLI reconciler hands over both succeed on a plain long-running worker, /rq shows the queues and the
    worker, and the CLI and bootstrap exit 0; no process ever meets CERTIFICATE_VERIFY_FAILED."""
    url = tls_redis
    assert _plain_tcp_is_refused(url), "the server must be TLS-only, or this test proves nothing"
    # An empty REDIS_TLS_URL counts as unset: REDIS_URL is the one in force here.
    env = {"REDIS_URL": url, "REDIS_TLS_URL": ""}

    bootstrap = subprocess.run([sys.executable, "scripts/bootstrap.py"], cwd=ROOT, env={**test_env, **env},
                               capture_output=True, text=True, timeout=60)
    assert bootstrap.returncode == 0, bootstrap.stdout + bootstrap.stderr
    assert "redis at rediss://:***@127.0.0.1" in bootstrap.stdout and "answers" in bootstrap.stdout, bootstrap.stdout
    assert PASSWORD_IN_URL not in bootstrap.stdout + bootstrap.stderr

    base, web = serve(env)
    status, ready = _readyz(base)
    assert (status, ready["checks"]) == (200, {"postgres": "ok", "redis": "ok"}), ready

    # A wrong password is counted by the login limiter, in the TLS Redis.
    assert _log_in(base, "alice@example.com", password="not her password") is None
    with _tls_client(url) as tls:
        assert tls.keys("*backhaul-login*"), "the login limiter counts in the TLS Redis"

    # An export sent through the form while no worker runs yet: it waits in the TLS Redis.
    alice = _log_in(base, "alice@example.com")
    assert alice, "alice logs in with her password"
    sent = _export_through_the_form(base, alice)
    with _tls_client(url) as tls:
        assert tls.llen("rq:queue:default") == 1, "the form handed the job to the TLS Redis"

    # An export sent while Redis was unreachable: only the reconciler can hand it over.
    offline = create_app({"TESTING": True, "REDIS_URL": DEAD_URL})
    waiting = Browserless(offline.test_client())
    waiting.login("alice@example.com")
    response = waiting.post("/exports/new", {"date_from": "2026-02-01", "date_to": "2026-02-28", "status": ""},
                            form_page="/exports/new")
    lost = response.headers["Location"].rsplit("/", 1)[-1]
    assert row(app, lost).status == "queued" and row(app, lost).enqueued_at is None

    reconcile = _flask("jobs", "reconcile", env=env)
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
    assert "1 handed over" in reconcile.stdout, reconcile.stdout + reconcile.stderr
    with _tls_client(url) as tls:
        assert tls.llen("rq:queue:default") == 2, "the CLI's reconciler handed the job to the TLS Redis"

    worker = start_worker(args=("--name", "tls-worker"), env=env)
    assert _finishes(app, sent, worker) == "succeeded", worker.output()[-3000:]
    assert _finishes(app, lost, worker) == "succeeded", worker.output()[-3000:]
    assert "tls-worker serving" in worker.output()

    # rq-dashboard, as an admin, through the same gunicorn.
    root = _log_in(base, "root@example.com")
    assert root, "the admin logs in"
    overview = _get(root, f"{base}/rq/")
    assert overview[0] == 200, overview
    assert PASSWORD_IN_URL not in overview[1], "rq-dashboard names the instance without its password"
    code, body = _get(root, f"{base}/rq/0/data/queues.json")
    assert code == 200, body
    queues = {queue["name"]: queue["count"] for queue in json.loads(body)["queues"]}
    assert queues.get("default") == 0, queues
    code, body = _get(root, f"{base}/rq/0/data/workers.json")
    assert code == 200, body
    assert "tls-worker" in [w["name"] for w in json.loads(body)["workers"]]
    code, body = _get(root, f"{base}/rq/0/view/workers")
    assert code == 200, body

    listing = _flask("jobs", "list", env=env)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    for job_id in (sent, lost):
        assert re.search(rf"{job_id}\s.*\ssucceeded\s", listing.stdout), listing.stdout
    again = _flask("jobs", "reconcile", env=env)
    assert again.returncode == 0 and "0 repairs" in again.stdout, again.stdout + again.stderr

    for name, output in (("worker", worker.output()), ("web", web.output()),
                         ("reconcile", reconcile.stderr + again.stderr), ("list", listing.stderr)):
        assert VERIFY_FAILED not in output, f"{name}: {output[-3000:]}"
        assert "Redis unreachable" not in output, f"{name}: {output[-3000:]}"
        assert PASSWORD_IN_URL not in output, f"{name} printed the Redis password"
    with Redis.from_url(test_env["REDIS_URL"]) as plain:
        assert not plain.keys("rq:*"), "nothing went to the plain Redis the test suite uses"


def test_redis_tls_url_wins_when_heroku_sets_both(app, users, tls_redis, serve, start_worker):
    """Heroku sets REDIS_TLS_URL beside REDIS_URL: with REDIS_URL dead, web and worker still use the TLS one."""
    env = {"REDIS_TLS_URL": tls_redis, "REDIS_URL": DEAD_URL}
    base, web = serve(env)
    status, ready = _readyz(base)
    assert (status, ready["checks"]["redis"]) == (200, "ok"), ready

    worker = start_worker(env=env)
    alice = _log_in(base, "alice@example.com")
    assert alice, "alice logs in"
    job_id = _export_through_the_form(base, alice)
    assert _finishes(app, job_id, worker) == "succeeded", worker.output()[-3000:]
    for output in (worker.output(), web.output()):
        assert VERIFY_FAILED not in output and "Redis unreachable" not in output, output[-3000:]
        assert PASSWORD_IN_URL not in output
