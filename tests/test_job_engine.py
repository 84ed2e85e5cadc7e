"""The job engine: the row is the truth, whatever Redis and workers do."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import wait_for
from tests.test_exports import job_json, submit_export
from webapp import jobstate, queueing, reconciler
from webapp.extensions import db
from webapp.kinds import KINDS
from webapp.models import Job, JobEvent


def test_a_submit_while_redis_is_down_is_kept_and_runs_when_redis_is_back(app, users, test_env, burst_worker):
    """Redis unreachable at submit: no 500, the row waits, and the reconciler hands it over later."""
    from tests.conftest import Browserless
    from webapp import create_app

    offline = create_app({"TESTING": True, "REDIS_URL": "redis://127.0.0.1:1/0"})
    client = Browserless(offline.test_client())
    client.login("alice@example.com")
    job_id = submit_export(client)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "Waiting for the queue" in page
    assert client.get("/readyz").status_code == 503
    assert client.get("/jobs/").status_code == 200, "pages keep serving"

    with app.app_context():
        job = db.session.get(Job, job_id)
        assert job.status == "queued" and job.enqueued_at is None
        db.session.execute(db.update(Job).where(Job.id == job_id).values(updated_at=job.updated_at.replace(year=2000)))
        db.session.commit()
        repairs = reconciler.reconcile_if_leader()
        assert repairs.requeued == 1
    burst_worker()
    with app.app_context():
        assert db.session.get(Job, job_id).status == "succeeded"


def test_a_transient_failure_is_retried_with_backoff_and_then_succeeds(app, users, start_worker):
    """A job failing once shows the retry on its row and succeeds on attempt 2."""
    with app.app_context():
        job = queueing.submit("selftest", users["alice"], {"fail_attempts": 1}, "flaky")
        job_id = job.id
    start_worker("fast")

    def retried():
        with app.app_context():
            return db.session.scalar(db.select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.event == "retried"))

    event = wait_for(retried, 30, message="the retry event")
    assert "failing on purpose" in event.detail
    with app.app_context():
        final = wait_for(lambda: _terminal(job_id), 40, message="the job to finish")
        assert final.status == "succeeded"
        assert final.attempts == 2
        assert final.result["attempt"] == 2


def _terminal(job_id):
    """The job row once it is finished, else None."""
    db.session.expire_all()
    job = db.session.get(Job, job_id)
    return job if job.is_terminal else None


def test_a_job_that_fails_every_attempt_ends_failed_and_can_be_retried_by_hand(app, users, as_alice, start_worker):
    """After its last attempt the job is failed with a message; Retry on its page runs it again."""
    with app.app_context():
        job = queueing.submit("selftest", users["alice"], {"fail_attempts": 99}, "always fails")
        job_id = job.id
    start_worker("fast")
    with app.app_context():
        final = wait_for(lambda: _terminal(job_id), 60, message="the job to fail")
        assert final.status == "failed"
        assert final.attempts == final.max_attempts == 3
        assert "failing on purpose" in final.error
    page = as_alice.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "It failed:" in page and "Retry" in page
    with app.app_context():
        db.session.execute(db.update(Job).where(Job.id == job_id).values(params={"fail_attempts": 0}))
        db.session.commit()
    response = as_alice.post(f"/jobs/{job_id}/retry", form_page=f"/jobs/{job_id}")
    assert response.status_code == 303
    with app.app_context():
        again = wait_for(lambda: _terminal(job_id), 30, message="the retried job")
        assert again.status == "succeeded"


def test_cancelling_a_running_job_stops_it_at_its_next_check(app, users, as_alice, start_worker):
    """Cancel on a running job's page stops it within seconds and the row says cancelled."""
    with app.app_context():
        job = queueing.submit("selftest", users["alice"], {"seconds": 30}, "long")
        job_id = job.id
    start_worker("fast")
    wait_for(lambda: job_json(as_alice, job_id)["status"] == "running", 20, message="the job to start")
    as_alice.post(f"/jobs/{job_id}/cancel", form_page=f"/jobs/{job_id}")
    row = wait_for(lambda: (r := job_json(as_alice, job_id))["status"] == "cancelled" and r, 10,
                   message="the cancel to take effect")
    assert "Cancelled" in row["message"]


def test_the_job_json_api_has_the_documented_fields(as_alice):
    """GET /jobs/<id> with Accept: application/json returns the row's public fields."""
    job_id = submit_export(as_alice)
    row = job_json(as_alice, job_id)
    assert set(row) >= {"id", "kind", "status", "progress", "message", "result", "error", "created_at",
                        "started_at", "finished_at"}
    assert row["id"] == str(job_id) and row["kind"] == "export_orders"


def test_the_state_machine_refuses_moves_it_does_not_allow(app, users):
    """A succeeded job cannot be re-queued, cancelled or started again."""
    with app.app_context():
        job = jobstate.create("selftest", users["alice"], {}, "t")
        db.session.commit()
        rq_id = jobstate.assign_rq_job(job.id)
        assert jobstate.start(job.id, "someone-elses-delivery", "w") is None, "stale delivery is skipped"
        assert jobstate.start(job.id, rq_id, "w") is not None
        assert jobstate.start(job.id, rq_id, "w") is None, "a duplicate delivery cannot start it twice"
        assert jobstate.succeed(job.id, {"summary": "ok"}, "ok") is not None
        assert jobstate.requeue(job.id) is None
        assert jobstate.request_cancel(job.id) is None
        assert jobstate.fail(job.id, "x") is None
        events = db.session.scalars(db.select(JobEvent.event).where(JobEvent.job_id == job.id)).all()
        assert events == ["submitted", "started", "succeeded"]
        with pytest.raises(jobstate.TransitionError):
            jobstate._sources(jobstate.S, [jobstate.S])


def test_a_finished_job_is_announced_once_to_its_owner(app, as_alice, burst_worker):
    """When a job finishes, the owner's next announcement poll shows a toast, once."""
    job_id = submit_export(as_alice)
    burst_worker()
    first = as_alice.get("/jobs/announcements").get_data(as_text=True)
    assert str(job_id) in first and "is ready" in first
    assert str(job_id) not in as_alice.get("/jobs/announcements").get_data(as_text=True)


def test_health_and_readiness(client):
    """/healthz says the process is up; /readyz checks PostgreSQL and Redis."""
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"postgres": "ok", "redis": "ok"}


def test_unknown_kind_cannot_be_submitted(app, users):
    """Submitting a kind that does not exist is a programming error caught at once."""
    with app.app_context(), pytest.raises(KeyError):
        queueing.submit("no_such_kind", users["alice"], {}, "x")
    with app.app_context():
        assert db.session.query(Job).count() == 0
    assert uuid


def test_a_handed_over_result_is_recorded_once_and_only_for_its_own_delivery(app, users):
    """The work process leaves its result; the worker records it on the row it claimed, once."""
    from jobs import runtime

    with app.app_context():
        job = jobstate.create("selftest", users["alice"], {}, "t")
        db.session.commit()
        rq_id = jobstate.assign_rq_job(job.id)
        assert jobstate.start(job.id, rq_id, "w") is not None
        runtime.hand_over_result("someone-elses-delivery", {"summary": "stale"})
        assert runtime.record_result(job.id, "someone-elses-delivery") is False, "not this row's delivery"
        assert runtime.record_result(job.id, rq_id) is False, "nothing handed over yet"
        runtime.hand_over_result(rq_id, {"summary": "Made 3 files", "files": 3})
        assert runtime.record_result(job.id, rq_id) is True
        assert runtime.record_result(job.id, rq_id) is False, "the file is used up"
        db.session.expire_all()
        row = db.session.get(Job, job.id)
        assert (row.status, row.message, row.result) == ("succeeded", "Made 3 files", {"summary": "Made 3 files",
                                                                                        "files": 3})


def test_results_nobody_collected_are_removed_after_an_hour(app):
    """A result whose worker died before reading it is never read (the job got a new delivery id)."""
    import os
    import time

    from jobs import runtime

    with app.app_context():
        runtime.hand_over_result("old_1", {"summary": "x"})
        runtime.hand_over_result("new_1", {"summary": "y"})
        folder = runtime.scratch_root() / "results"
        two_hours_ago = time.time() - 7200
        os.utime(folder / "old_1.json", (two_hours_ago, two_hours_ago))
        assert runtime.remove_stale_results() == 1
        assert sorted(p.name for p in folder.glob("*.json")) == ["new_1.json"]
        (folder / "new_1.json").unlink()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_names_an_entry_point_that_runs_as_a_job(kind):
    """Each kind's dotted path imports, is wrapped by job_entry (takes the row id only), and names a real queue."""
    import importlib

    from jobs.runtime import job_entry
    from webapp.kinds import QUEUES

    policy = KINDS[kind]
    module_name, name = policy.func.rsplit(".", 1)
    entry = getattr(importlib.import_module(module_name), name)
    assert entry.__code__ is job_entry(lambda ctx: {}).__code__, f"{policy.func} is not wrapped by @job_entry"
    assert callable(entry.__wrapped__)
    assert policy.queue in QUEUES
    assert policy.timeout > 0 and policy.max_attempts >= 1
    assert policy.label and policy.name == kind
