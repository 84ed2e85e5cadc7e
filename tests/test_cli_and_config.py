"""Settings from the environment and the command-line tools an operator uses."""

from __future__ import annotations

import json

import pytest

from tests.factories import add_orders
from webapp.config import ConfigError, database_url, load_config
from webapp.extensions import db
from webapp.models import Job, User


@pytest.mark.parametrize(("given", "expected"), [
    ("postgres://u:p@db:5432/app", "postgresql+psycopg2://u:p@db:5432/app"),
    ("postgresql://u@127.0.0.1/app", "postgresql+psycopg2://u@127.0.0.1/app"),
    ("postgresql+psycopg2://u@h/app", "postgresql+psycopg2://u@h/app"),
])
def test_database_urls_from_heroku_and_elsewhere_use_psycopg2(given, expected):
    """postgres:// (Heroku) and postgresql:// both end up on the psycopg2 driver."""
    assert database_url(given) == expected


def test_a_non_postgres_database_url_is_refused_clearly():
    """SQLite (or a typo) fails loudly instead of half-working."""
    with pytest.raises(ConfigError, match="must be a PostgreSQL URL"):
        database_url("sqlite:///app.db")


def test_production_requires_a_secret_key(monkeypatch):
    """BACKHAUL_ENV=production without SECRET_KEY refuses to start; with one it starts with secure cookies."""
    monkeypatch.setenv("BACKHAUL_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        load_config()
    monkeypatch.setenv("SECRET_KEY", "x" * 40)
    config = load_config()
    assert config["SESSION_COOKIE_SECURE"] is True and config["DEV_MAILBOX"] is False


def test_bad_numbers_in_settings_are_named(monkeypatch):
    """A setting that should be a number says which one is wrong."""
    monkeypatch.setenv("PHOTO_MAX_MB", "fifty")
    with pytest.raises(ConfigError, match="PHOTO_MAX_MB must be a whole number"):
        load_config()


def test_users_create_makes_an_account_that_can_log_in(app, client):
    """`flask users create` makes a working (admin) login; a short password is refused."""
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "ops@example.com", "--password", "long enough pw", "--admin"])
    assert result.exit_code == 0, result.output
    assert "admin ops@example.com ready" in result.output
    assert client.login("ops@example.com", "long enough pw").status_code == 302
    short = runner.invoke(args=["users", "create", "x@example.com", "--password", "short"])
    assert short.exit_code != 0 and "at least 8 characters" in short.output
    with app.app_context():
        assert db.session.scalar(db.select(User.is_admin).where(User.email == "ops@example.com")) is True


def test_jobs_cli_lists_shows_cancels_retries_reconciles_and_prunes(app, users, burst_worker):
    """The jobs command group does what its help says on real rows."""
    from webapp import queueing

    add_orders(app, [("Anna", "2026-01-01T10:00:00", "paid", 1, "1.00")])
    runner = app.test_cli_runner()
    with app.app_context():
        job = queueing.submit("export_orders", users["alice"], {"date_from": "2026-01-01", "date_to": "2026-01-31",
                                                                "status": None}, "cli export")
        job_id = str(job.id)
    listed = runner.invoke(args=["jobs", "list", "--status", "queued"])
    assert job_id in listed.output and "cli export" in listed.output
    shown = json.loads(runner.invoke(args=["jobs", "show", job_id]).output)
    assert shown["status"] == "queued"
    assert "Cancelled before it started" in runner.invoke(args=["jobs", "cancel", job_id]).output
    assert "queued again" in runner.invoke(args=["jobs", "retry", job_id]).output
    assert "repairs" in runner.invoke(args=["jobs", "reconcile"]).output
    burst_worker()
    with app.app_context():
        assert db.session.get(Job, job.id).status == "succeeded"
    pruned = runner.invoke(args=["jobs", "prune", "--days", "0"])
    assert "1 jobs" in pruned.output and "1 files" in pruned.output
    assert runner.invoke(args=["jobs", "show", "not-a-job"]).exit_code != 0


def test_the_dev_mailbox_lists_what_the_sink_received(app, as_alice, as_admin, burst_worker, mailbox):
    """In development, a test newsletter shows up on the Dev mailbox page, which only admins may open."""
    from tests.test_newsletters import compose

    newsletter_id = compose(as_alice, subject="Mailbox check")
    as_alice.post(f"/newsletters/{newsletter_id}/test", form_page=f"/newsletters/{newsletter_id}")
    burst_worker("fast")
    page = as_admin.get("/dev/mailbox/").get_data(as_text=True)
    assert "[TEST] Mailbox check" in page
    assert as_alice.get("/dev/mailbox/").status_code == 403
