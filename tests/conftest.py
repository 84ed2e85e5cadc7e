"""Shared fixtures: a fresh PostgreSQL database, its own Redis DB, real workers, a live server.

Tests never touch the data `make run` uses: the database is ``backhaul_test``
(recreated each session) and Redis is DB 13 (flushed before each test). The
settings go into the environment so that worker and web subprocesses the tests
start see the same ones.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
TEST_DB = os.environ.get("BACKHAUL_TEST_DB", "backhaul_test")
PG = os.environ.get("BACKHAUL_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_BASE = os.environ.get("BACKHAUL_TEST_REDIS", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("BACKHAUL_TEST_REDIS_DB", "13"))
PASSWORD = "correct horse battery"


def _free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def test_env(tmp_path_factory) -> dict[str, str]:
    """Environment for the app, its workers and servers under test."""
    base = tmp_path_factory.mktemp("backhaul")
    env = {
        "BACKHAUL_ENV": "test",
        # A key of this run's own: none in the source is accepted anywhere.
        "SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": f"{PG}/{TEST_DB}",
        "REDIS_URL": f"{REDIS_BASE}/{REDIS_DB}",
        "STORAGE_DIR": str(base / "storage"),
        "SCRATCH_DIR": str(base / "scratch"),
        "MAIL_SINK_DIR": str(base / "mail"),
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(_free_port()),
        "PUBLIC_URL": "http://backhaul.test",
        "RETRY_BASE_SECONDS": "1",
        "JOB_HEARTBEAT_SECONDS": "1",
        "JOB_STALE_SECONDS": "4",
        "RECONCILE_SECONDS": "1",
        "CANCEL_GRACE_SECONDS": "2",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update(env)
    return env


@pytest.fixture(scope="session")
def database(test_env) -> str:
    """Create the test database from scratch and run the migrations into it."""
    from scripts.bootstrap import recreate_database

    recreate_database(PG, TEST_DB, str(ROOT))
    return test_env["DATABASE_URL"]


@pytest.fixture(scope="session")
def smtp_server(test_env):
    """A real SMTP server (aiosmtpd) on the port the app and its workers send to."""
    from scripts.mail_sink import MailSink

    sink = MailSink(port=int(test_env["MAIL_PORT"]), folder=test_env["MAIL_SINK_DIR"]).start()
    yield sink
    sink.stop()


@pytest.fixture
def mailbox(smtp_server):
    """The SMTP server, emptied and accepting everyone, for one test."""
    smtp_server.clear()
    smtp_server.accept()
    smtp_server.delay = 0
    return smtp_server


@pytest.fixture(scope="session")
def app(database, test_env):
    """The Flask app under test (CSRF on: forms are posted with their tokens)."""
    from webapp import create_app

    app = create_app({"TESTING": True, "SCRATCH_DIR": test_env["SCRATCH_DIR"]})
    return app


@pytest.fixture(autouse=True)
def clean_state(request, test_env) -> Iterator[None]:
    """Empty every table and the test Redis DB before each test that uses the app."""
    if "app" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("app")
    from webapp import signed_in
    from webapp.extensions import db

    with app.app_context():
        tables = [t.name for t in db.metadata.sorted_tables]
        db.session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        db.session.execute(text("SELECT lo_unlink(oid) FROM pg_largeobject_metadata"))
        db.session.commit()
        # Ids restart at 1 in every test: no account may be remembered from the last one.
        signed_in.forget()
    Redis.from_url(test_env["REDIS_URL"]).flushdb()
    yield


@pytest.fixture
def ctx(app):
    """An app context for direct database work in a test."""
    with app.app_context():
        yield app


def make_user(app, email: str, *, admin: bool = False):
    """Create an account and return its id."""
    from webapp.extensions import db
    from webapp.models import User

    with app.app_context():
        user = User(email=email, is_admin=admin)
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.commit()
        return user.id


@pytest.fixture
def users(app) -> dict[str, int]:
    """alice and bob (ordinary users) and root (admin)."""
    return {
        "alice": make_user(app, "alice@example.com"),
        "bob": make_user(app, "bob@example.com"),
        "root": make_user(app, "root@example.com", admin=True),
    }


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"|name="csrf-token" content="([^"]+)"')


class Browserless:
    """A test client that logs in and posts forms with their CSRF tokens, as a browser would."""

    def __init__(self, client) -> None:
        self.client = client

    def token(self, path: str = "/login") -> str:
        """Fetch a page and read its CSRF token."""
        page = self.client.get(path).get_data(as_text=True)
        match = CSRF_RE.search(page)
        assert match, f"no CSRF token on {path}"
        return match.group(1) or match.group(2)

    def login(self, email: str, password: str = PASSWORD):
        """Log in through the form."""
        return self.client.post("/login", data={"email": email, "password": password, "csrf_token": self.token()})

    def post(self, path: str, data: dict | None = None, form_page: str | None = None, **kwargs):
        """POST with the CSRF token a real form would carry."""
        data = dict(data or {})
        data.setdefault("csrf_token", self.token(form_page or "/jobs/"))
        response = self.client.post(path, data=data, **kwargs)
        # Werkzeug's test client only closes the spooled request body when it follows
        # redirects; close it here so large uploads leave no open temporary file.
        response.get_data()
        response.request.input_stream.close()
        return response

    def __getattr__(self, name):
        return getattr(self.client, name)


@pytest.fixture
def client(app) -> Browserless:
    """A logged-out client."""
    return Browserless(app.test_client())


@pytest.fixture
def as_alice(app, users) -> Browserless:
    """A client logged in as alice."""
    c = Browserless(app.test_client())
    assert c.login("alice@example.com").status_code == 302
    return c


@pytest.fixture
def as_bob(app, users) -> Browserless:
    """A client logged in as bob."""
    c = Browserless(app.test_client())
    assert c.login("bob@example.com").status_code == 302
    return c


@pytest.fixture
def as_admin(app, users) -> Browserless:
    """A client logged in as the admin."""
    c = Browserless(app.test_client())
    assert c.login("root@example.com").status_code == 302
    return c


def run_worker(*queues: str, timeout: float = 120, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run a real RQ worker (forking, JSON) in burst mode until the queues are empty."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "worker.py"), *queues, "--burst", "--no-nice", "--no-reconciler", *extra],
        cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture
def burst_worker(app):
    """Run a real worker in burst mode: ``burst_worker()`` after submitting jobs."""
    return run_worker


class Process:
    """A long-running subprocess (worker, web server) that is stopped at the end of the test."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None) -> None:
        self.log_path = log
        self.log = open(log, "wb")  # noqa: SIM115 - open for the life of the process
        self.proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Signal the process group and wait for it to end."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        """What the process printed so far."""
        self.log.flush()
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_worker(app, tmp_path) -> Iterator:
    """Start real long-running workers: ``start_worker("fast", reconciler=True)``; stopped after the test."""
    started: list[Process] = []

    def start(*queues: str, reconciler: bool = True, args: tuple[str, ...] = (), env: dict | None = None) -> Process:
        flags = ["--no-nice"] + ([] if reconciler else ["--no-reconciler"])
        proc = Process([sys.executable, str(ROOT / "worker.py"), *queues, *flags, *args],
                       tmp_path / f"worker{len(started)}.log", env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def live_server(app, tmp_path) -> Iterator[str]:
    """The app under gunicorn on a free port; yields its base URL."""
    port = _free_port()
    proc = Process([sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                    "--timeout", "30"], tmp_path / "gunicorn.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.stop()
        pytest.fail("gunicorn did not start:\n" + proc.output())
    yield url
    proc.stop()


def wait_for(predicate, timeout: float = 30, every: float = 0.2, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture(scope="session")
def chromium():
    """A headless Debian Chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, FLAGS

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    """A fresh browser tab with its own cookies, desktop-sized."""
    context = chromium.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    yield tab
    context.close()
