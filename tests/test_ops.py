"""Operations: /metrics agrees with what workers did; the ops page tells an admin whether to add workers."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Browserless
from webapp import create_app, queueing
from webapp.extensions import db
from webapp.models import Job


def scrape(client, **headers) -> dict:
    """Parse /metrics with prometheus_client's own parser into {(name, labels): value}."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_what_a_real_worker_did(app, users, client, burst_worker):
    """3 successes, 1 failure and 1 cancellation show up by kind, with durations and queue gauges."""
    with app.app_context():
        for i in range(3):
            queueing.submit("selftest", users["alice"], {"seconds": 0.1}, f"ok {i}")
        bad = queueing.submit("selftest", users["alice"], {"fail_attempts": 9}, "bad")
        db.session.execute(db.update(Job).where(Job.id == bad.id).values(max_attempts=1))
        db.session.commit()
        doomed = queueing.submit("selftest", users["alice"], {}, "cancelled")
        queueing.cancel(doomed.id)
    burst_worker("fast")
    samples = scrape(client)
    kind = (("event", "succeeded"), ("kind", "selftest"))
    assert samples[("backhaul_job_events_total", kind)] == 3
    assert samples[("backhaul_job_events_total", (("event", "failed"), ("kind", "selftest")))] == 1
    assert samples[("backhaul_job_events_total", (("event", "cancelled"), ("kind", "selftest")))] == 1
    assert samples[("backhaul_job_events_total", (("event", "submitted"), ("kind", "selftest")))] == 5
    assert samples[("backhaul_job_duration_seconds_count", (("kind", "selftest"),))] == 4
    assert samples[("backhaul_job_duration_seconds_bucket", (("kind", "selftest"), ("le", "+Inf")))] == 4
    assert samples[("backhaul_job_duration_seconds_sum", (("kind", "selftest"),))] > 0.3
    assert samples[("backhaul_jobs", (("kind", "selftest"), ("status", "succeeded")))] == 3
    assert samples[("backhaul_queue_depth", (("queue", "fast"),))] == 0
    assert samples[("backhaul_redis_up", ())] == 1


def test_metrics_can_require_a_bearer_token(app, users):
    """With METRICS_TOKEN set, a scrape without the token is refused."""
    guarded = Browserless(create_app({"TESTING": True, "METRICS_TOKEN": "s3cret"}).test_client())
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert scrape(guarded, Authorization="Bearer s3cret")[("backhaul_redis_up", ())] == 1


def test_metrics_and_ops_page_survive_redis_being_down(app, users):
    """Redis away: /metrics still answers (redis_up 0) and the ops page says the queue is unreachable."""
    offline = Browserless(create_app({"TESTING": True, "REDIS_URL": "redis://127.0.0.1:1/0"}).test_client())
    samples = scrape(offline)
    assert samples[("backhaul_redis_up", ())] == 0
    offline.login("root@example.com")
    page = offline.get("/ops/")
    assert page.status_code == 200
    assert "The queue (Redis) is unreachable" in page.get_data(as_text=True)


def test_the_ops_page_is_for_admins(client, as_alice, as_admin):
    """Anonymous: login page; a user: 403; an admin: queues, a chart and the self-test form."""
    assert client.get("/ops/").headers["Location"].startswith("/login")
    assert as_alice.get("/ops/").status_code == 403
    page = as_admin.get("/ops/").get_data(as_text=True)
    for expected in ("waiting in", "fast", "default", "cpu", "<svg", "Run self-test", 'hx-trigger="every 5s"'):
        assert expected in page


def test_a_self_test_from_the_ops_page_runs_on_a_worker(app, as_admin, burst_worker):
    """The self-test form queues a diagnostic job that a worker completes."""
    response = as_admin.post("/ops/selftest", {"seconds": "0.2", "fail_attempts": "0"}, form_page="/ops/")
    assert response.status_code == 303
    burst_worker("fast")
    row = as_admin.get(response.headers["Location"], headers={"Accept": "application/json"}).get_json()
    assert row["status"] == "succeeded"
    page = as_admin.get("/ops/").get_data(as_text=True)
    assert "Self-test" in page and "p95" in page


def test_waiting_jobs_no_queue_holds_are_named_as_stuck_not_as_a_reason_to_scale():
    """Rows waiting for minutes while every queue is empty mean the hand-over is stuck; queues with work do not."""
    from webapp.views.ops import stuck_hint

    assert "no worker is handing them over" in stuck_hint({"fast": 0, "default": 0, "cpu": 0}, {"fast": 3600.0})
    assert stuck_hint({"fast": 0, "default": 0, "cpu": 0}, {"fast": 20.0}) is None
    assert stuck_hint({"fast": 40, "default": 0, "cpu": 0}, {"fast": 3600.0}) is None
    assert stuck_hint(None, {"fast": 3600.0}) is None

