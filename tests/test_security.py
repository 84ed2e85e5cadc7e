"""Security, staged for real: deploys that forget a secret, forged cookies, throttled logins, hostile input."""

from __future__ import annotations

import http.cookiejar
import os
import re
import stat
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from flask import Flask

from tests.conftest import PASSWORD, ROOT, Browserless, wait_for
from webapp import create_app, signed_in
from webapp.config import PUBLIC_KEYS, ConfigError, development_secret_key, load_config

LONG_KEY = "k" * 48


def _production_app(monkeypatch, **overrides) -> Flask:
    """The app as a production deploy builds it (TESTING only to see errors in the test)."""
    monkeypatch.setenv("BACKHAUL_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", LONG_KEY)
    return create_app({"TESTING": True, **overrides})


def _without_env(*names: str) -> dict[str, str]:
    """This process's environment minus ``names``."""
    return {k: v for k, v in os.environ.items() if k not in names}


# --- 2. fail closed ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "list"],
    [sys.executable, str(ROOT / "worker.py"), "--burst", "--no-nice", "--no-reconciler"],
    [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", "127.0.0.1:0", "--workers", "1"],
], ids=["cli", "worker", "web"])
def test_a_process_not_told_it_is_in_development_refuses_to_start_without_a_secret_key(test_env, command):
    """No BACKHAUL_ENV and no SECRET_KEY (a deploy that forgot both): web, worker and CLI stop and say why."""
    result = subprocess.run(command, cwd=ROOT, env=_without_env("BACKHAUL_ENV", "SECRET_KEY"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "SECRET_KEY is not set: Backhaul will not start in production without it" in result.stderr


@pytest.mark.parametrize("key", ["test-only-secret-key-never-valid-elsewhere", "dev-only-secret-change-me", "short"])
def test_production_refuses_a_public_or_short_key(monkeypatch, key):
    """Keys that were ever in the source, and short keys, are refused in every environment."""
    monkeypatch.setenv("BACKHAUL_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", key)
    with pytest.raises(ConfigError, match="SECRET_KEY must be a random value"):
        load_config()
    monkeypatch.setenv("BACKHAUL_ENV", "development")
    with pytest.raises(ConfigError, match="SECRET_KEY must be a random value"):
        load_config()


def test_an_unknown_environment_name_is_refused(monkeypatch):
    """A typo such as 'prod' is not silently treated as something else."""
    monkeypatch.setenv("BACKHAUL_ENV", "prod")
    with pytest.raises(ConfigError, match="BACKHAUL_ENV must be one of"):
        load_config()


def test_development_generates_its_own_key_once_per_checkout(tmp_path, monkeypatch):
    """Development without SECRET_KEY: a random key in a private, git-ignored file, the same on every start."""
    path = tmp_path / "var" / "secret_key"
    first = development_secret_key(path)
    assert len(first) == 64 and first == development_secret_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert development_secret_key(tmp_path / "other") != first
    ignored = subprocess.run(["git", "check-ignore", "-q", "var/secret_key"], cwd=ROOT)
    assert ignored.returncode == 0, "var/secret_key must be git-ignored"
    monkeypatch.setenv("BACKHAUL_ENV", "development")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    config = load_config()
    assert config["SECRET_KEY"] not in PUBLIC_KEYS
    assert config["DEV_MAILBOX"] is True


def test_a_cookie_signed_with_the_old_public_key_logs_nobody_in(client, users):
    """The key once shipped in the source ('dev-only-secret-change-me') signs no session we accept."""
    forger = Flask("forger")
    forger.secret_key = "dev-only-secret-change-me"
    forged = forger.session_interface.get_signing_serializer(forger).dumps({"_user_id": str(users["root"])})
    client.client.set_cookie("session", forged)
    response = client.get("/rq/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_production_has_no_dev_mailbox_and_no_open_metrics(monkeypatch, app, users):
    """In production the dev mailbox does not exist (even if DEV_MAILBOX=1), and /metrics is off without a token."""
    monkeypatch.setenv("DEV_MAILBOX", "1")
    prod = Browserless(_production_app(monkeypatch).test_client())
    assert prod.get("/dev/mailbox/").status_code == 404
    assert prod.get("/metrics").status_code == 404
    tokened = Browserless(_production_app(monkeypatch, METRICS_TOKEN="scrape-me").test_client())
    assert tokened.get("/metrics").status_code == 401
    scraped = tokened.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert scraped.status_code == 200 and b"backhaul_redis_up" in scraped.data


def test_the_dev_mailbox_is_for_admins_only(client, as_alice, as_admin):
    """Logged out: the login page; a user: 403; an admin: the mailbox."""
    assert client.get("/dev/mailbox/").headers["Location"].startswith("/login")
    assert as_alice.get("/dev/mailbox/").status_code == 403
    assert as_alice.get("/dev/mailbox/some-message").status_code == 403
    assert as_admin.get("/dev/mailbox/").status_code == 200


# --- 4. login throttling ----------------------------------------------------------------------------------------

def _fail_logins(client: Browserless, email: str, times: int) -> None:
    """Log in ``times`` times with a wrong password; each is an ordinary 'wrong password' page."""
    for _ in range(times):
        assert client.login(email, "wrong password!").status_code == 400


def test_an_account_is_locked_for_a_while_after_ten_wrong_passwords(app, users, client):
    """Ten wrong passwords, then the right one: 429 with our page, a message and Retry-After; other accounts
    from the same address still log in."""
    _fail_logins(client, "alice@example.com", 10)
    refused = client.login("alice@example.com")
    assert refused.status_code == 429
    page = refused.get_data(as_text=True)
    assert "Too many failed log-ins" in page and "Try again in 15 minutes" in page
    assert 800 < int(refused.headers["Retry-After"]) <= 900
    assert client.get("/jobs/").status_code == 302, "nobody logged in"
    assert Browserless(app.test_client()).login("bob@example.com").status_code == 302
    assert Browserless(app.test_client()).login("ALICE@example.com ").status_code == 429, "same account, any case"


def test_an_address_is_throttled_across_accounts(app, users, client, monkeypatch):
    """Guessing over many e-mails from one address hits the per-address limit; another address is unaffected."""
    monkeypatch.setitem(app.config, "LOGIN_LIMIT_PER_ADDRESS", "3 per 15 minutes")
    for i in range(3):
        _fail_logins(client, f"guess{i}@example.com", 1)
    assert client.login("bob@example.com").status_code == 429
    other_network = app.test_client()
    other_network.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    elsewhere = Browserless(other_network)
    assert elsewhere.login("bob@example.com").status_code == 302


def test_the_limit_is_kept_in_redis_across_processes(app, users, live_server):
    """Failures counted by a gunicorn (two workers) lock the account in another process too."""
    for _ in range(10):
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(f"{live_server}/login") as response:
            form = response.read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        body = urllib.parse.urlencode({"email": "alice@example.com", "password": "nope nope", "csrf_token": token})
        with pytest.raises(urllib.error.HTTPError) as failed:
            opener.open(f"{live_server}/login", body.encode())
        failed.value.close()
        assert failed.value.code == 400
    assert Browserless(app.test_client()).login("alice@example.com").status_code == 429


def test_login_still_works_when_redis_is_down(app, users):
    """No Redis: the limiter logs and lets the attempt through (fail open); no 500."""
    offline = Browserless(create_app({"TESTING": True, "REDIS_URL": "redis://127.0.0.1:1/0"}).test_client())
    assert offline.login("alice@example.com", "wrong password!").status_code == 400
    assert offline.login("alice@example.com").status_code == 302


def test_an_unknown_email_takes_as_long_as_a_known_one(app, users, client):
    """A wrong password for a real account and any password for a made-up one cost the same hashing time."""
    def timed(email: str) -> float:
        started = time.perf_counter()
        assert client.login(email, "wrong password!").status_code == 400
        return time.perf_counter() - started

    known, unknown = [], []
    for i in range(4):
        known.append(timed("alice@example.com"))
        unknown.append(timed(f"nobody{i}@example.com"))
    assert statistics.median(unknown) > 0.5 * statistics.median(known), (known, unknown)


# --- 5. ending sessions -----------------------------------------------------------------------------------------

def _copy_of(client: Browserless, app) -> Browserless:
    """Another browser holding a copy of ``client``'s session cookie."""
    stolen = client.client.get_cookie("session")
    thief = app.test_client()
    thief.set_cookie("session", stolen.value)
    return Browserless(thief)


def test_logging_out_ends_a_copied_session_cookie_too(app, as_alice):
    """A copy of the cookie taken while logged in works until the owner logs out, then it is worthless."""
    thief = _copy_of(as_alice, app)
    assert thief.get("/jobs/").status_code == 200
    assert as_alice.post("/logout").status_code == 302
    assert as_alice.get("/jobs/").status_code == 302
    response = thief.get("/jobs/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_logging_out_in_one_process_ends_the_session_in_the_others(app, as_alice, live_server):
    """The same cookie on a gunicorn (other processes, their own caches) stops working within the cache window."""
    cookie = as_alice.client.get_cookie("session").value

    def status() -> int:
        request = urllib.request.Request(f"{live_server}/jobs/", headers={"Cookie": f"session={cookie}"})
        opener = urllib.request.build_opener(_NoRedirect)
        with opener.open(request) as response:
            return response.status

    assert status() == 200
    as_alice.post("/logout")
    wait_for(lambda: status() == 302, app.config["ACCOUNT_CACHE_SECONDS"] + 5, every=0.1,
             message="the other processes to drop the session")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report a redirect as it is instead of following it."""

    def http_error_302(self, req, fp, code, msg, headers):
        """Return the 302 response itself."""
        return fp


def test_changing_the_password_logs_out_every_other_session(app, users, as_alice):
    """A new password keeps this browser logged in and ends every other session; the new password works."""
    thief = _copy_of(as_alice, app)
    wrong = as_alice.post("/account/password", {"current": "not it at all", "new": "a brand new pw",
                                                "confirm": "a brand new pw"}, form_page="/account/password")
    assert wrong.status_code == 400 and "not your current password" in wrong.get_data(as_text=True)
    changed = as_alice.post("/account/password", {"current": PASSWORD, "new": "a brand new pw",
                                                  "confirm": "a brand new pw"}, form_page="/account/password")
    assert changed.status_code == 302
    assert as_alice.get("/jobs/").status_code == 200
    assert thief.get("/jobs/").status_code == 302
    fresh = Browserless(app.test_client())
    assert fresh.login("alice@example.com").status_code == 400
    assert fresh.login("alice@example.com", "a brand new pw").status_code == 302


def test_a_new_password_from_the_cli_ends_every_session(app, as_alice):
    """`flask users create` on an existing account (a reset by the operator) ends its sessions."""
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "alice@example.com", "--password", "operator reset"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        signed_in.forget()
    assert as_alice.get("/jobs/").status_code == 302


# --- 6. security headers and the Content-Security-Policy in a real browser ---------------------------------------

def test_every_response_carries_the_security_headers(client, as_alice, monkeypatch, app, users):
    """Pages, error pages, static files and /rq answers all carry the headers; HSTS only in production."""
    for response in (client.get("/login"), as_alice.get("/jobs/"), as_alice.get("/no/such/page"),
                     client.get("/static/css/app.css"), as_alice.get("/rq/")):
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert "Strict-Transport-Security" not in response.headers
        response.close()
    main = client.get("/login").headers["Content-Security-Policy"]
    assert "script-src 'self';" in main and "unsafe-inline'" not in main.split("style-src-attr")[0]
    prod = _production_app(monkeypatch).test_client()
    assert prod.get("/login").headers["Strict-Transport-Security"].startswith("max-age=")


class PolicyWatch:
    """Collects what a page's Content-Security-Policy refused, every alert dialog and every console error."""

    def __init__(self, page) -> None:
        self.violations: list[str] = []
        self.dialogs: list[str] = []
        self.console: list[str] = []
        page.expose_function("__reportViolation", self._violation)
        page.add_init_script("""document.addEventListener('securitypolicyviolation', (e) => {
            window.__reportViolation(e.effectiveDirective + ' ' + e.blockedURI + ' ' + (e.sample || '') +
                                     ' on ' + document.location.pathname);
        }, true);""")
        page.on("dialog", self._dialog)
        page.on("console", lambda message: self.console.append(message.text) if message.type == "error" else None)

    def _violation(self, description: str) -> None:
        """Note what the policy refused."""
        self.violations.append(description)

    def _dialog(self, dialog) -> None:
        """Note the dialog and dismiss it."""
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def test_the_main_pages_work_under_the_policy_without_a_single_violation(app, users, live_server, start_worker,
                                                                          page, tmp_path):
    """Log in, export to a finished job (htmx polling), upload a photo, compose a newsletter, open the ops page:
    nothing is refused by the Content-Security-Policy, and the confirm step of a delete still asks."""
    from tests.browser import login
    from tests.factories import seed_many_orders
    from tests.test_photos import jpeg_bytes

    seed_many_orders(app, 200)
    watch = PolicyWatch(page)
    start_worker()
    login(page, live_server, "root@example.com", PASSWORD)
    page.get_by_role("link", name="Exports").click()
    page.get_by_label("From").fill("2020-01-01")
    page.get_by_label("To").fill("2029-12-31")
    page.get_by_role("button", name="Export to CSV").click()
    page.wait_for_url("**/jobs/*")
    page.get_by_role("link", name="Download CSV").wait_for(timeout=30_000)
    page.get_by_role("link", name="Jobs").first.click()
    page.locator("table.table tbody tr").first.wait_for()

    photo = tmp_path / "shoe.jpg"
    photo.write_bytes(jpeg_bytes((800, 600)))
    page.get_by_role("link", name="Photos").click()
    page.set_input_files("input#photos", [str(photo)])
    page.get_by_role("button", name="Upload").click()
    page.wait_for_function("() => document.querySelectorAll('.photo-card img').length === 1", timeout=30_000)
    page.locator(".photo-card a").first.click()
    page.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    assert "Delete this photo and all its variants?" in dialog.inner_text(), "the page asks before deleting"
    dialog.get_by_role("button", name="Cancel").click()
    assert watch.dialogs == [], "no browser alert: the question is our own dialog, run from static/js"
    assert "/photos/" in page.url

    page.get_by_role("link", name="Newsletters").click()
    page.get_by_role("link", name="Compose").first.click()
    page.get_by_label("Subject").fill("Policy check")
    page.get_by_role("button", name="Save and preview").click()
    page.get_by_role("button", name="Send a test to me").wait_for()
    page.get_by_role("link", name="Operations").click()
    page.locator("#ops-panel svg").wait_for()
    page.wait_for_timeout(300)
    assert watch.violations == []
    assert not [line for line in watch.console if "Content Security Policy" in line], watch.console


# --- 3. rq-dashboard under its own policy: user text cannot run in an admin's browser ----------------------------

PAYLOAD = "<img src=x onerror=\"window.__xss=1;alert('xss')\">"


def test_hostile_job_text_runs_no_script_in_rq_dashboard(app, users, as_alice, live_server, burst_worker, page,
                                                          mailbox):
    """A plain user titles a newsletter with an <img onerror> and sends tests (one finished, one still queued); a
    job with that text in its RQ description and meta is planted as well. An admin opens the queues, the registry
    lists and each job page in /rq: no script runs, no dialog opens, and the planted one is refused by the policy."""
    from rq.registry import FinishedJobRegistry

    from tests.browser import login
    from tests.test_newsletters import compose
    from webapp.queueing import get_queue

    newsletter_id = compose(as_alice, subject=PAYLOAD, body=PAYLOAD)
    as_alice.post(f"/newsletters/{newsletter_id}/test", form_page=f"/newsletters/{newsletter_id}")
    burst_worker("fast")
    as_alice.post(f"/newsletters/{newsletter_id}/test", form_page=f"/newsletters/{newsletter_id}")
    with app.app_context():
        queue = get_queue("default")
        planted = queue.enqueue("jobs.selftest.not_run", job_id="planted-by-the-test", description=PAYLOAD,
                                meta={"note": PAYLOAD})
        fast = get_queue("fast")
        job_ids = [*fast.get_job_ids(), *FinishedJobRegistry("fast", connection=fast.connection).get_job_ids()]
    assert job_ids, "the queued test send (and the finished one, while RQ keeps it) are in /rq"

    watch = PolicyWatch(page)
    login(page, live_server, "root@example.com", PASSWORD)
    views = ["/rq/", "/rq/0/view/jobs/fast/finished/8/asc/1", "/rq/0/view/jobs/fast/queued/8/asc/1",
             "/rq/0/view/jobs/default/queued/8/asc/1"]
    for path in views:
        page.goto(live_server + path)
        page.wait_for_load_state("networkidle")
    # rq-dashboard works under its policy: its script loaded the list and rendered the rows.
    page.locator("tr[data-job-id='planted-by-the-test']").wait_for()
    assert PAYLOAD in page.locator("tr[data-job-id='planted-by-the-test']").inner_text(), "shown as text"
    for job_id in [*job_ids, planted.id]:
        page.goto(f"{live_server}/rq/0/view/job/{job_id}")
        page.locator("#job-data p").first.wait_for()
        page.wait_for_load_state("networkidle")
        assert page.evaluate("window.__xss") is None, f"script ran on the page of {job_id}"
    assert page.locator("#job-data img[src='x']").count() >= 1, "the planted markup reached the page"
    assert any(v.startswith("script-src-attr") for v in watch.violations), watch.violations
    assert watch.dialogs == []
    for path in views:  # the list pages (which escape descriptions) and the job pages refused nothing else
        assert not [v for v in watch.violations if v.endswith(path)], watch.violations


# --- 8. request body size ---------------------------------------------------------------------------------------

def test_an_anonymous_900_mb_login_body_is_refused_at_once(app, live_server):
    """gunicorn answers a declared 900 MB POST /login with 413 without waiting for (or reading) the body."""
    import socket

    host, port = live_server.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(b"POST /login HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 943718400\r\n\r\nemail=a")
        answer = b""
        while b"</html>" not in answer and (part := conn.recv(65536)):
            answer += part
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"That request is too large for this page." in answer
    assert time.monotonic() - started < 15


def test_forms_take_one_megabyte_and_photo_uploads_their_own_limit(as_alice):
    """A 2 MB form post is refused with our page; a 2 MB photo upload goes through the photo route."""
    from tests.test_photos import upload

    big_form = as_alice.post("/exports/new", {"date_from": "2026-01-01", "date_to": "2026-01-02",
                                              "status": "x" * (2 * 1024 * 1024)}, form_page="/exports/new")
    assert big_form.status_code == 413
    assert "That request is too large for this page." in big_form.get_data(as_text=True)
    photo = upload(as_alice, ("large.jpg", b"\xff\xd8\xff\xe0" + os.urandom(2 * 1024 * 1024)))
    assert photo.status_code == 303


# --- 9. odd input is a 4xx with our page, never a 500 ------------------------------------------------------------

HUGE = "99999999999999999999"


@pytest.mark.parametrize("path", [
    f"/jobs/?page={HUGE}",
    f"/subscribers/?page={HUGE}",
    f"/newsletters/{{newsletter}}/report?page={HUGE}",
    "/dev/mailbox/" + "m" * 3000,
    "/rq/0/view/job/nope",
    "/rq/0/data/job/nope.json",
    "/rq/0/view/job/" + "j" * 3000,
    "/rq/0/view/jobs/fast/bogus/8/asc/1",
    "/rq/0/data/jobs/fast/bogus/8/asc/1.json",
    "/rq/0/data/jobs/fast/queued/x/asc/1.json",
    "/rq/0/data/jobs/fast/queued/0/asc/1.json",
    "/rq/0/data/jobs/fast/queued/8/up/1.json",
    f"/rq/0/data/jobs/fast/queued/8/asc/{HUGE}.json",
    "/rq/0/data/jobs/nope/queued/8/asc/1.json",
    "/rq/5/view",
    "/rq/5/data/queues.json",
    "POST /rq/job/nope/requeue",
    "POST /rq/queue/cpu/compact",
    "POST /rq/queue/fast/bogus/empty",
])
def test_odd_input_gets_a_4xx_page_not_a_crash(as_admin, path):
    """Huge page numbers, over-long names and unknown ids or registries in rq-dashboard: 4xx with our error page."""
    from tests.test_newsletters import compose

    if "{newsletter}" in path:
        path = path.format(newsletter=compose(as_admin))
    method, _, path = path.rpartition(" ")
    if method == "POST":
        response = as_admin.client.post(path, headers={"Origin": "http://localhost"})
    else:
        response = as_admin.get(path)
    assert 400 <= response.status_code < 500, response.status_code
    assert 'class="error-box"' in response.get_data(as_text=True)


# --- 10. subscriber CSV files as spreadsheets and mail tools really write them -----------------------------------

def _import(client: Browserless, content: bytes, burst_worker, name: str = "list.csv") -> dict:
    """Upload ``content`` through the import form, run a real worker, return the job row."""
    import io

    response = client.post("/subscribers/import", {"csv_file": (io.BytesIO(content), name)},
                           form_page="/subscribers/", content_type="multipart/form-data")
    assert response.status_code == 303, response.get_data(as_text=True)
    job_id = response.headers["Location"].rsplit("/", 1)[-1]
    burst_worker("bulk")  # subscriber imports are bulk work
    return client.get(f"/jobs/{job_id}", headers={"Accept": "application/json"}).get_json()


def _subscribers(app) -> dict[str, str]:
    """Every subscriber's address and name."""
    from webapp.extensions import db
    from webapp.models import Subscriber

    with app.app_context():
        return dict(db.session.execute(db.select(Subscriber.email, Subscriber.name)).all())


LIST = "email;name\r\nanna@example.com;Anna Ångström\r\nbob@example.com;Bob, Jr.\r\n"


@pytest.mark.parametrize(("label", "content"), [
    ("UTF-8 with BOM, CRLF, semicolons", b"\xef\xbb\xbf" + LIST.encode()),
    ("UTF-8, LF only", LIST.replace("\r\n", "\n").encode()),
    ("UTF-8, CR only (classic Mac)", LIST.replace("\r\n", "\r").encode()),
    ("UTF-16 LE with BOM (Excel's Unicode text)", LIST.encode("utf-16")),
    ("UTF-16 BE with BOM", b"\xfe\xff" + LIST.encode("utf-16-be")),
    ("commas, a quoted name with a comma", 'email,name\nanna@example.com,Anna Ångström\nbob@example.com,"Bob, Jr."\n'
                                          .encode()),
    ("tabs, columns the other way round", "name\temail\nAnna Ångström\tanna@example.com\nBob, Jr.\tbob@example.com\n"
                                          .encode()),
])
def test_csv_files_as_spreadsheets_write_them_import_cleanly(app, as_admin, burst_worker, label, content):
    """Every encoding, line ending and delimiter a spreadsheet writes gives the same two subscribers, names intact."""
    row = _import(as_admin, content, burst_worker)
    assert row["status"] == "succeeded", row
    assert row["result"]["added"] == 2 and row["result"]["problems"] == []
    assert _subscribers(app) == {"anna@example.com": "Anna Ångström", "bob@example.com": "Bob, Jr."}


def test_unusable_lines_are_explained_by_line_and_the_rest_imported(app, as_admin, burst_worker):
    """A NUL byte, control characters, a missing address, a 200 kB field: each line is reported with its number,
    nothing of it is stored, and the good lines go in."""
    content = (b"email,name\n"
               b"good1@example.com,One\n"
               b"nul\x00@example.com,Nul\n"
               b"good2@example.com,Tw\x00o\n"
               b",No address\n"
               b"bell\x07@example.com,Bell\n"
               b"long@example.com," + b"x" * 200_000 + b"\n"
               b"good3@example.com,Three\x1b[31m\n")
    row = _import(as_admin, content, burst_worker)
    assert row["status"] == "succeeded", row
    reasons = {p["line"]: p["reason"] for p in row["result"]["problems"]}
    assert reasons[3] == reasons[4] == "contains a NUL byte (not text)"
    assert reasons[5] == "no e-mail address"
    assert reasons[6].startswith("invalid address")
    assert reasons[7].startswith("unreadable line")
    assert all("\x00" not in p["value"] and "\x07" not in p["value"] for p in row["result"]["problems"])
    assert _subscribers(app) == {"good1@example.com": "One", "good3@example.com": "Three[31m"}
    page = as_admin.get(f"/jobs/{row['id']}").get_data(as_text=True)
    assert "contains a NUL byte" in page


@pytest.mark.parametrize(("content", "message"), [
    ("email\nanna@example.com\nJosé,x\n".encode("latin-1"), "Line 3 is not UTF-8 text"),
    (b"PK\x03\x04" + os.urandom(2000), "Excel workbook"),
    (b"\x89PNG\r\n\x1a\n" + os.urandom(3000), "is not UTF-8 text"),
    (b"email,name\n\n", "no lines with an e-mail address"),
])
def test_a_file_that_is_not_a_csv_fails_once_with_a_clear_message(app, as_admin, burst_worker, content, message):
    """Latin-1, an .xlsx, a PNG, an empty list: the job fails with a message that says what to do, and is not
    retried; nothing is added."""
    row = _import(as_admin, content, burst_worker)
    assert row["status"] == "failed", row
    assert message in row["error"]
    assert row["attempts"] == 1
    assert _subscribers(app) == {}


# --- 7. who may act on subscribers --------------------------------------------------------------------------------

SUBSCRIBER_ACTIONS = [
    ("GET", "/subscribers/", {}),
    ("GET", "/subscribers/?q=example", {}),
    ("POST", "/subscribers/", {"email": "new@example.com", "name": "New"}),
    ("POST", "/subscribers/{subscriber}/unsubscribe", {}),
    ("POST", "/subscribers/import", {}),
]


@pytest.mark.parametrize(("method", "path", "data"), SUBSCRIBER_ACTIONS)
@pytest.mark.parametrize("who", ["anonymous", "staff", "admin"])
def test_only_admins_list_add_import_and_unsubscribe_subscribers(app, users, who, method, path, data):
    """The subscriber list is personal data: admins only; staff get 403, visitors the login page."""
    from tests.test_newsletters import add_subscribers

    add_subscribers(app, 2)
    client = Browserless(app.test_client())
    if who != "anonymous":
        assert client.login("root@example.com" if who == "admin" else "alice@example.com").status_code == 302
    path = path.format(subscriber=1)
    if method == "GET":
        response = client.get(path)
    else:
        form = dict(data, csrf_token=client.token("/login" if who == "anonymous" else "/jobs/"))
        response = client.client.post(path, data=form)
    if who == "anonymous":
        assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    elif who == "staff":
        assert response.status_code == 403
        assert "for administrators" in response.get_data(as_text=True)
    else:
        assert response.status_code in (200, 303), response.status_code


def test_staff_write_and_send_newsletters(app, users, as_alice, burst_worker, mailbox):
    """Staff compose, preview and send a test of a newsletter without seeing the subscriber list."""
    from tests.test_newsletters import add_subscribers, compose, send

    add_subscribers(app, 3)
    newsletter_id = compose(as_alice, subject="Staff news")
    assert as_alice.get(f"/newsletters/{newsletter_id}").status_code == 200
    send(as_alice, newsletter_id)
    burst_worker("fast", "bulk")
    assert len(mailbox.messages) == 3


# --- 11. same-origin guard, CSRF token rotation, no open redirect ------------------------------------------------

def test_the_rq_guard_compares_scheme_host_and_port(as_admin):
    """An Origin on the same host but another scheme or port is another site; only our own origin may post."""
    for origin in ("https://localhost", "http://localhost:8080", "http://localhost.evil.example",
                   "http://evil.example"):
        assert as_admin.client.post("/rq/job/abc/requeue", headers={"Origin": origin}).status_code == 403, origin
    ours = as_admin.client.post("/rq/job/abc/requeue", headers={"Origin": "http://localhost"})
    assert ours.status_code == 404, "allowed through the guard, then: no such job"


def test_a_csrf_token_from_before_login_is_worthless_after_it(app, users):
    """A token planted or seen before login (session fixation) cannot sign a form after login."""
    client = Browserless(app.test_client())
    before = client.token("/login")
    assert client.client.post("/login", data={"email": "alice@example.com", "password": PASSWORD,
                                              "csrf_token": before}).status_code == 302
    stale = client.client.post("/exports/new", data={"date_from": "2026-01-01", "date_to": "2026-01-02",
                                                     "status": "", "csrf_token": before})
    assert stale.status_code == 400 and "Form expired" in stale.get_data(as_text=True)
    fresh = client.post("/exports/new", {"date_from": "2026-01-01", "date_to": "2026-01-02", "status": ""},
                        form_page="/exports/new")
    assert fresh.status_code == 303


def test_unsubscribing_someone_never_follows_the_referer(app, users, as_admin):
    """After unsubscribing by hand the admin lands on our subscriber list (search and page kept), whatever
    Referer the request carried."""
    from tests.test_newsletters import add_subscribers

    add_subscribers(app, 2)
    response = as_admin.post("/subscribers/1/unsubscribe", {"q": "sub", "page": "2"}, form_page="/subscribers/",
                             headers={"Referer": "https://evil.example/phish"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/subscribers/?q=sub&page=2"
    plain = as_admin.post("/subscribers/2/unsubscribe", form_page="/subscribers/",
                          headers={"Referer": "//evil.example/"})
    assert plain.headers["Location"] == "/subscribers/"


def test_forwarded_headers_count_only_behind_a_trusted_proxy(app, users, monkeypatch):
    """Without TRUSTED_PROXIES a forged X-Forwarded-For does not escape the per-address limit; behind one proxy
    (Heroku's router) the client's address and https scheme are the ones that count."""
    monkeypatch.setitem(app.config, "LOGIN_LIMIT_PER_ADDRESS", "2 per 15 minutes")
    direct = Browserless(app.test_client())
    _fail_logins(direct, "guess@example.com", 2)
    spoofed = direct.client.post("/login", data={"email": "bob@example.com", "password": PASSWORD,
                                                 "csrf_token": direct.token()},
                                 headers={"X-Forwarded-For": "198.51.100.1"})
    assert spoofed.status_code == 429

    proxied_app = create_app({"TESTING": True, "TRUSTED_PROXIES": 1})
    proxied = Browserless(proxied_app.test_client())
    # Flask-WTF wants a same-site Referer on https, as a browser sends it.
    proxied.client.environ_base.update({"HTTP_X_FORWARDED_FOR": "203.0.113.9", "HTTP_X_FORWARDED_PROTO": "https",
                                        "HTTP_REFERER": "https://localhost/login"})
    assert proxied.login("root@example.com").status_code == 302, "another client address behind the proxy"
    through = proxied.client.post("/rq/job/abc/requeue", headers={"Origin": "https://localhost"})
    assert through.status_code == 404, "https Origin matches the https the proxy reported"
    # This app's own Redis clients (the limiter's and rq-dashboard's), closed before the app is dropped.
    proxied_app.extensions["login_limiter"].storage.storage.close()
    proxied_app.redis_conn.close()


def test_the_login_throttle_counts_in_a_tls_only_redis(app, users, tmp_path):
    """On rediss:// with a self-signed certificate (as Heroku Redis presents), the limiter connects with the same
    TLS options as every other client and locks the account after ten failures."""
    import socket

    from tests.conftest import Process, _free_port

    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=redis",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    port = _free_port()
    server = Process(["redis-server", "--port", "0", "--tls-port", str(port), "--save", "", "--appendonly", "no",
                      "--tls-cert-file", str(tmp_path / "cert.pem"), "--tls-key-file", str(tmp_path / "key.pem"),
                      "--tls-auth-clients", "no"], tmp_path / "redis.log")
    try:
        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 15, message="redis-server over TLS")
        tls_app = create_app({"TESTING": True, "REDIS_URL": f"rediss://127.0.0.1:{port}/0"})
        client = Browserless(tls_app.test_client())
        _fail_logins(client, "alice@example.com", 10)
        assert client.login("alice@example.com").status_code == 429
        storage = tls_app.extensions["login_limiter"].storage.storage
        assert storage.keys("*backhaul-login*"), "the counts are in the TLS Redis"
        storage.close()
        tls_app.redis_conn.close()
    finally:
        server.stop()
