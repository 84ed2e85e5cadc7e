"""Who sees what: users see only their own jobs and files, admins see all, /rq is admin-only."""

from __future__ import annotations

import io
import uuid

import pytest

from tests.test_exports import job_json, submit_export
from webapp import storage
from webapp.extensions import db
from webapp.kinds import QUEUES


@pytest.mark.parametrize("path", ["/jobs/", "/exports/new", f"/jobs/{uuid.uuid4()}", f"/files/{uuid.uuid4()}"])
def test_logged_out_visitors_are_sent_to_the_login_page(client, path):
    """Every private page asks a logged-out visitor to log in first."""
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_wrong_password_is_refused_with_a_message(client, users):
    """A wrong password shows a message and logs nobody in."""
    response = client.login("alice@example.com", "not the password")
    assert response.status_code == 400
    assert "Wrong e-mail or password." in response.get_data(as_text=True)
    assert client.get("/jobs/").status_code == 302


def test_another_users_job_is_not_found(as_alice, as_bob):
    """Bob cannot see, cancel or retry Alice's job: it does not exist for him."""
    job_id = submit_export(as_alice)
    assert as_bob.get(f"/jobs/{job_id}").status_code == 404
    assert as_bob.get(f"/jobs/{job_id}/status").status_code == 404
    assert as_bob.post(f"/jobs/{job_id}/cancel").status_code == 404
    assert job_json(as_alice, job_id)["status"] == "queued"


def test_another_users_file_is_not_found(app, users, as_alice, as_bob):
    """A stored file downloads for its owner and is a 404 for anyone else."""
    with app.app_context():
        stored = storage.store_stream(users["alice"], io.BytesIO(b"secret,data\n"), "mine.csv", "text/csv")
        db.session.commit()
        file_id = stored.id
    assert as_alice.get(f"/files/{file_id}").get_data() == b"secret,data\n"
    assert as_bob.get(f"/files/{file_id}").status_code == 404


def test_job_lists_show_own_jobs_and_admins_see_everyone(as_alice, as_bob, as_admin):
    """Alice's list has her job only; the admin's list has both users' jobs."""
    alice_job = submit_export(as_alice, "2026-01-01", "2026-01-31")
    bob_job = submit_export(as_bob, "2026-02-01", "2026-02-28")
    alice_page = as_alice.get("/jobs/").get_data(as_text=True)
    assert str(alice_job) in alice_page and str(bob_job) not in alice_page
    admin_page = as_admin.get("/jobs/").get_data(as_text=True)
    assert str(alice_job) in admin_page and str(bob_job) in admin_page
    assert as_admin.get(f"/jobs/{alice_job}").status_code == 200


def test_job_list_filters_by_kind_and_status(as_alice):
    """Filtering by status keeps only matching jobs and says so when none match."""
    submit_export(as_alice)
    assert "Orders" in as_alice.get("/jobs/?status=queued").get_data(as_text=True)
    empty = as_alice.get("/jobs/?status=failed").get_data(as_text=True)
    assert "No jobs match these filters." in empty


def test_unknown_job_id_is_a_clear_404(as_alice):
    """A job id that does not exist (or is not a UUID) gets a 404 page, not a crash."""
    missing = as_alice.get(f"/jobs/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert "No such job." in missing.get_data(as_text=True)
    assert as_alice.get("/jobs/not-a-uuid").status_code == 404


def test_rq_dashboard_is_for_admins_only(client, as_alice, as_admin):
    """Logged out: login page; a user: 403; an admin: the dashboard with our queues."""
    assert client.get("/rq/").headers["Location"].startswith("/login")
    assert as_alice.get("/rq/").status_code == 403
    page = as_admin.get("/rq/")
    assert page.status_code == 200
    queues = as_admin.get("/rq/0/data/queues.json").get_json()
    # rq-dashboard lists the queues Redis knows about: those this test's jobs touched, or none.
    assert {q["name"] for q in queues["queues"]} <= set(QUEUES)


def test_rq_dashboard_refuses_cross_site_posts(as_admin):
    """rq-dashboard's own POST endpoints have no CSRF token: a post from another site is refused."""
    response = as_admin.client.post("/rq/job/abc/requeue", headers={"Origin": "http://evil.example"})
    assert response.status_code == 403
    assert as_admin.client.post("/rq/job/abc/requeue").status_code == 403, "no Origin or Referer: refused"
    # requeue-all changes state on GET too
    assert as_admin.client.get("/rq/requeue/default", headers={"Referer": "http://evil.example/x"}).status_code == 403
    same_site = as_admin.client.get("/rq/requeue/default", headers={"Referer": "http://localhost/rq/"})
    assert same_site.status_code == 200


def test_forms_without_a_csrf_token_are_refused(as_alice):
    """A POST without the form's CSRF token is rejected with a readable page."""
    response = as_alice.client.post("/exports/new", data={"date_from": "2026-01-01", "date_to": "2026-01-02"})
    assert response.status_code == 400
    assert "Form expired" in response.get_data(as_text=True)


def test_an_accounts_changes_apply_within_the_cache_window(app, users, as_admin, as_alice, monkeypatch):
    """A revoked admin right or a deleted account takes effect within ACCOUNT_CACHE_SECONDS
    (without logging out), and at the very next request when the window is 0."""
    from tests.conftest import wait_for
    from webapp.models import User

    assert as_admin.get("/rq/").status_code == 200
    with app.app_context():
        db.session.get(User, users["root"]).is_admin = False
        db.session.commit()
    wait_for(lambda: as_admin.get("/rq/").status_code == 403, app.config["ACCOUNT_CACHE_SECONDS"] + 2, every=0.05,
             message="the revoked admin right to apply")

    monkeypatch.setitem(app.config, "ACCOUNT_CACHE_SECONDS", 0)
    assert as_alice.get("/jobs/").status_code == 200
    with app.app_context():
        db.session.delete(db.session.get(User, users["alice"]))
        db.session.commit()
    assert as_alice.get("/jobs/").headers["Location"].startswith("/login")
