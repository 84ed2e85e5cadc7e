"""Security, staged for real: deploys that forget a secret, forged cookies, throttled logins, hostile input."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from flask import Flask

from tests.conftest import ROOT, Browserless
from webapp import create_app
from webapp.config import TEST_SECRET_KEY, ConfigError, development_secret_key, load_config

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


@pytest.mark.parametrize("key", [TEST_SECRET_KEY, "dev-only-secret-change-me", "short"])
def test_production_refuses_a_public_or_short_key(monkeypatch, key):
    """The test suite's key (it is in the source) and short keys are refused outside the tests."""
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
    assert config["SECRET_KEY"] not in (TEST_SECRET_KEY, "dev-only-secret-change-me")
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
