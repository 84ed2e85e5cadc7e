"""Newsletters: compose, test, send to everyone once, unsubscribe, failures and imports — real SMTP, real workers."""

from __future__ import annotations

import io
import re

from sqlalchemy import func, select, text

from webapp import queueing
from webapp.extensions import db
from webapp.models import Delivery, Job, Newsletter, Subscriber
from webapp.models.job import TERMINAL


def add_subscribers(app, count: int, names: dict[int, str] | None = None) -> None:
    """Insert ``count`` subscribers sub1@example.com.. with optional special names."""
    with app.app_context():
        db.session.execute(
            text("INSERT INTO subscribers (email, name, active, created_at) "
                 "SELECT 'sub' || g || '@example.com', 'Reader ' || g, true, now() FROM generate_series(1, :n) g"),
            {"n": count},
        )
        for number, name in (names or {}).items():
            db.session.execute(text("UPDATE subscribers SET name = :name WHERE email = :email"),
                               {"name": name, "email": f"sub{number}@example.com"})
        db.session.commit()


def compose(client, subject="Spring news", body="Hello {{ name }},\n\n**New** shoes are in.") -> int:
    """Compose a newsletter through the form; return its id."""
    response = client.post("/newsletters/new", {"subject": subject, "body_format": "markdown", "body": body},
                           form_page="/newsletters/new")
    assert response.status_code == 303, response.get_data(as_text=True)
    return int(response.headers["Location"].rstrip("/").rsplit("/", 1)[-1])


def send(client, newsletter_id: int) -> None:
    """Press 'Send to all subscribers'."""
    response = client.post(f"/newsletters/{newsletter_id}/send", form_page=f"/newsletters/{newsletter_id}")
    assert response.status_code == 303


def test_the_preview_renders_markdown_and_drops_scripts(as_alice):
    """Markdown becomes HTML; an author's <script> and javascript: link do not survive."""
    newsletter_id = compose(as_alice, body="Hi {{ name }}\n\n**bold** <script>alert(1)</script> "
                                           "[x](javascript:alert(2))")
    page = as_alice.get(f"/newsletters/{newsletter_id}").get_data(as_text=True)
    assert "<strong>bold</strong>" in page
    assert "<script>alert(1)" not in page and "javascript:alert" not in page


def test_a_test_send_arrives_in_my_inbox(app, as_alice, burst_worker, mailbox):
    """'Send a test to me' delivers one [TEST] message to the author."""
    newsletter_id = compose(as_alice)
    as_alice.post(f"/newsletters/{newsletter_id}/test", form_page=f"/newsletters/{newsletter_id}")
    burst_worker("fast", "bulk")
    assert [m["Subject"] for m in mailbox.messages] == ["[TEST] Spring news"]
    assert mailbox.messages[0]["To"] == "alice@example.com"


def test_everyone_gets_exactly_one_personalised_message(app, as_alice, burst_worker, mailbox):
    """450 subscribers in batches of 200: one message each, personalised, with one-click unsubscribe headers."""
    add_subscribers(app, 450, {7: "<script>alert('x')</script>", 8: "Eve\r\nBcc: attacker@evil.example"})
    newsletter_id = compose(as_alice)
    send(as_alice, newsletter_id)
    burst_worker("fast", "bulk")
    received = mailbox.messages
    recipients = mailbox.recipients
    assert len(received) == 450 and len(set(recipients)) == 450
    with app.app_context():
        batches = db.session.scalars(select(Job).where(Job.kind == "newsletter_batch")).all()
        assert len(batches) == 3 and all(b.status == "succeeded" for b in batches)
        assert db.session.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "sent")) == 450
    by_to = {m["To"].addresses[0].addr_spec: m for m in received}
    first = by_to["sub1@example.com"]
    assert "Hello Reader 1," in first.get_body(("plain",)).get_content()
    assert first["List-Unsubscribe"].startswith("<http://backhaul.test/u/")
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = by_to["sub7@example.com"].get_body(("html",)).get_content()
    assert "&lt;script&gt;" in html and "<script>" not in html
    evil = by_to["sub8@example.com"]
    assert evil["Bcc"] is None and "attacker@evil.example" not in recipients
    page = as_alice.get(f"/newsletters/{newsletter_id}").get_data(as_text=True)
    assert "450</strong> sent" in page


def test_a_long_paragraph_is_delivered_intact(app, as_alice, burst_worker, mailbox):
    """A 5,000-character line is not refused by the server ('Line too long') and arrives whole."""
    add_subscribers(app, 2)
    paragraph = "Ünïcode news. " * 400
    send(as_alice, compose(as_alice, body=f"Hello {{{{ name }}}},\n\n{paragraph}"))
    burst_worker("fast", "bulk")
    assert len(mailbox.messages) == 2
    assert paragraph.strip() in mailbox.messages[0].get_body(("plain",)).get_content()


def test_running_a_batch_again_sends_nothing_twice(app, users, as_alice, burst_worker, mailbox):
    """A batch delivered twice (a retry, a duplicate) skips every address already sent."""
    add_subscribers(app, 30)
    newsletter_id = compose(as_alice)
    send(as_alice, newsletter_id)
    burst_worker("fast", "bulk")
    assert len(mailbox.messages) == 30
    with app.app_context():
        parent = db.session.get(Newsletter, newsletter_id).send_job_id
        queueing.submit("newsletter_batch", users["alice"], {"newsletter_id": newsletter_id, "batch_no": 0},
                        "again", parent=db.session.get(Job, parent))
    burst_worker("fast", "bulk")
    assert len(mailbox.messages) == 30


def test_a_refused_address_is_reported_and_the_rest_are_delivered(app, as_alice, burst_worker, mailbox):
    """A 550 for one address marks it failed with the server's words; everyone else gets the message."""
    add_subscribers(app, 20)
    mailbox.refuse("sub5@example.com", "550 5.1.1 <sub5@example.com>: user unknown")
    newsletter_id = compose(as_alice)
    send(as_alice, newsletter_id)
    burst_worker("fast", "bulk")
    assert len(mailbox.messages) == 19
    report = as_alice.get(f"/newsletters/{newsletter_id}/report").get_data(as_text=True)
    assert "sub5@example.com" in report and "550" in report and "user unknown" in report


def test_an_smtp_server_that_is_down_marks_nothing_sent(app, as_alice, burst_worker, monkeypatch):
    """With the mail server unreachable the batch waits to retry, says why, and no delivery is marked sent."""
    from scripts.mail_sink import free_port

    add_subscribers(app, 5)
    newsletter_id = compose(as_alice)
    send(as_alice, newsletter_id)
    monkeypatch.setenv("MAIL_PORT", str(free_port()))
    burst_worker("fast", "bulk")
    with app.app_context():
        batch = db.session.scalar(select(Job).where(Job.kind == "newsletter_batch"))
        assert batch.status == "queued", "handed back for a later retry"
        assert re.search(r"Mail server unavailable", batch.message)
        assert "attempt 2 of" in batch.message
        assert db.session.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "sent")) == 0


def test_the_unsubscribe_link_confirms_and_nothing_more_is_sent(app, as_alice, client, burst_worker, mailbox):
    """GET shows a confirmation, POST unsubscribes, and the next newsletter skips that address."""
    add_subscribers(app, 3)
    send(as_alice, compose(as_alice))
    burst_worker("fast", "bulk")
    message = next(m for m in mailbox.messages if m["To"].addresses[0].addr_spec == "sub2@example.com")
    link = message["List-Unsubscribe"].strip("<>").replace("http://backhaul.test", "")
    confirm = client.get(link).get_data(as_text=True)
    assert "Stop sending newsletters to <strong>sub2@example.com</strong>?" in confirm
    done = client.client.post(link)  # a mail client's one-click POST carries no CSRF token
    assert done.status_code == 200 and "You are unsubscribed" in done.get_data(as_text=True)
    assert client.get(link[:-3] + "abc").status_code == 404, "a tampered link is refused"
    mailbox.clear()
    send(as_alice, compose(as_alice, subject="Second"))
    burst_worker("fast", "bulk")
    assert sorted(m["To"].addresses[0].addr_spec for m in mailbox.messages) == ["sub1@example.com",
                                                                              "sub3@example.com"]


def test_a_csv_import_adds_valid_addresses_and_explains_the_rest(app, as_admin, burst_worker):
    """Valid new addresses are added; invalid, duplicate and existing ones are reported by line; re-running adds none."""
    add_subscribers(app, 1)
    csv_text = ("email,name\nnew1@example.com,New One\nnot-an-email,Bad\nnew2@example.com,\n"
                "NEW1@example.com,Dup\nsub1@example.com,Existing\n")
    for expected_added in (2, 0):
        response = as_admin.post("/subscribers/import",
                                 {"csv_file": (io.BytesIO(csv_text.encode()), "list.csv")},
                                 form_page="/subscribers/", content_type="multipart/form-data")
        assert response.status_code == 303
        job_id = response.headers["Location"].rsplit("/", 1)[-1]
        burst_worker("bulk")
        row = as_admin.get(f"/jobs/{job_id}", headers={"Accept": "application/json"}).get_json()
        assert row["status"] == "succeeded", row
        assert row["result"]["added"] == expected_added
    reasons = {p["line"]: p["reason"] for p in row["result"]["problems"]}
    assert reasons[3].startswith("invalid address")
    assert reasons[5] == "duplicate of an earlier line"
    assert reasons[6] == "already subscribed"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Subscriber)) == 3


def _received_addresses(mailbox) -> list[str]:
    """Every envelope recipient the SMTP server accepted, in order."""
    return mailbox.recipients


def test_a_worker_killed_mid_batch_sends_each_address_at_most_once_more(app, as_alice, start_worker, mailbox):
    """SIGKILL the work process halfway through a batch; the retry completes it with at most one duplicate."""
    import os
    import signal

    from tests.conftest import wait_for

    add_subscribers(app, 120)
    mailbox.delay = 0.01
    newsletter_id = compose(as_alice)
    send(as_alice, newsletter_id)
    start_worker("fast", "bulk")
    wait_for(lambda: mailbox.count >= 40, 60, message="sending to be under way")

    def running_batch_pid() -> int | None:
        with app.app_context():
            batch = db.session.scalar(select(Job).where(Job.kind == "newsletter_batch", Job.status == "running"))
            name = batch.worker_name if batch is not None else None
            return int(name.rsplit("/", 1)[1]) if name and "/" in name else None

    def jobs_unfinished() -> int:
        with app.app_context():
            return db.session.scalar(select(func.count()).select_from(Job).where(Job.status.not_in([s.value for s in TERMINAL])))

    os.kill(wait_for(running_batch_pid, 20, message="the batch's work process"), signal.SIGKILL)
    # The sink has a message a moment before the batch marks it sent: wait for the jobs, not the sink.
    wait_for(lambda: jobs_unfinished() == 0, 90, message="the retried batch to finish")
    addresses = _received_addresses(mailbox)
    assert len(set(addresses)) == 120
    assert len(addresses) - len(set(addresses)) <= 1, "only the message in flight may be sent twice"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "sent")) == 120


def test_cancelling_a_send_stops_it_and_keeps_what_was_sent(app, as_alice, start_worker, mailbox):
    """Cancel during the send: sending stops, the sent ones stay recorded, the rest are reported not sent."""
    from tests.conftest import wait_for

    add_subscribers(app, 400)
    mailbox.delay = 0.01
    newsletter_id = compose(as_alice)
    send(as_alice, newsletter_id)
    start_worker("fast", "bulk")
    wait_for(lambda: mailbox.count >= 20, 60, message="sending to be under way")
    as_alice.post(f"/newsletters/{newsletter_id}/cancel", form_page=f"/newsletters/{newsletter_id}")
    page = wait_for(lambda: "stopped" in (p := as_alice.get(f"/newsletters/{newsletter_id}").get_data(as_text=True))
                    and p, 30, message="the send to stop")
    with app.app_context():
        sent = db.session.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "sent"))
    assert 20 <= sent < 400
    assert len(set(_received_addresses(mailbox))) == sent
    assert "not sent" in page


def test_the_send_rate_limit_holds_across_processes(app, test_env):
    """At 20 messages a second, 30 sends cannot finish in under about 1.4 s, whoever sends them."""
    import threading
    import time

    from redis import Redis

    from jobs.smtp_delivery import RateLimiter

    redis = Redis.from_url(test_env["REDIS_URL"])
    started = time.monotonic()

    def sender() -> None:
        limiter = RateLimiter(redis, "test:rate", 20)
        for _ in range(10):
            limiter.acquire()

    threads = [threading.Thread(target=sender) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started >= 1.4
