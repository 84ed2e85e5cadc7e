"""Batch sending over SMTP: each message once over one connection, refusals reported, outages handed back, rate held.

A real aiosmtpd server (scripts/mail_sink.py) and the tests' real Redis DB; a small Flask app
with Flask-Mail stands in for the worker's app context. ``Ledger`` plays the caller's
delivery rows: ``on_sent`` marks a row sent, ``on_failed`` records the server's words.
"""

from __future__ import annotations

import contextlib
import smtplib
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from flask import Flask
from flask_mail import Mail
from redis import Redis

from bench.smtp_delay_proxy import start_delay_proxy
from jobs.errors import JobCancelled, JobFailed, TransientError
from jobs.smtp_delivery import (
    BatchOutcome,
    PermanentSMTPError,
    RateLimiter,
    SendPolicy,
    TransientSMTPError,
    build_message,
    send_batch,
)
from scripts.mail_sink import MailSink, free_port
from webapp.newsletter_content import personalise, render_body

SENDER = "Corner Shop <news@shop.example>"
# Outages are simulated, so there is no point waiting half a second between reconnects.
QUICK = SendPolicy(timeout=5, reconnects=2, backoff=0.01)


@contextlib.contextmanager
def flask_mail(port: int, **settings) -> Iterator[Mail]:
    """A Flask app whose Flask-Mail sends to localhost:port, with its app context pushed."""
    app = Flask(__name__)
    app.config.update({"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": port, "MAIL_DEFAULT_SENDER": SENDER,
                       "MAIL_SUPPRESS_SEND": False, **settings})
    mail = Mail()
    mail.init_app(app)
    with app.app_context():
        yield mail


@pytest.fixture
def sink() -> Iterator[MailSink]:
    """A running SMTP server that accepts everyone."""
    with MailSink() as server:
        yield server


@pytest.fixture
def mail(sink) -> Iterator[Mail]:
    """Flask-Mail pointed at the sink."""
    with flask_mail(sink.port) as configured:
        yield configured


@pytest.fixture
def rate_key(test_env) -> Iterator[tuple[Redis, str]]:
    """A connection to the tests' Redis DB and a key of this test's own, deleted afterwards."""
    redis = Redis.from_url(test_env["REDIS_URL"])
    key = f"test:smtp-delivery:{uuid.uuid4().hex}"
    yield redis, key
    redis.delete(key)
    redis.close()


class Ledger:
    """The caller's delivery rows: what was marked sent and what failed, with the server's words."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.failed: dict[str, str] = {}

    def on_sent(self, key: str) -> None:
        self.sent.append(key)

    def on_failed(self, key: str, error: str) -> None:
        self.failed[key] = error

    def send(self, mail: Mail, items, **kwargs) -> BatchOutcome:
        """send_batch with this ledger as its bookkeeping."""
        return send_batch(mail, items, on_sent=self.on_sent, on_failed=self.on_failed, **kwargs)


def addresses(count: int) -> list[str]:
    """r0@example.com, r1@example.com..."""
    return [f"r{i}@example.com" for i in range(count)]


def newsletter(to: list[str], *, subject: str = "Spring news", name: str = "Reader", skip=()):
    """(address, message) pairs built one at a time, as a worker builds them; addresses in ``skip`` left out."""
    html, text = render_body("Hello {{ name }},\n\n**New** shoes are in.", "markdown")
    for address in to:
        if address in skip:
            continue
        body_html, body_text = personalise(html, text, name)
        yield address, build_message(
            sender=SENDER, to_email=address, to_name=name, subject=subject, html=body_html, text=body_text,
            unsubscribe_url=f"https://shop.example/u/token-{address}",
            unsubscribe_post_url=f"https://shop.example/u/token-{address}",
        )


def by_recipient(sink: MailSink) -> dict:
    """The received messages keyed by their envelope recipient."""
    return {item.rcpt_tos[0]: item for item in sink.received}


# -- the normal case -------------------------------------------------------------------------------


def test_a_batch_of_200_arrives_once_each_over_one_connection(sink, mail):
    """200 subscribers: 200 messages, one per address, all over a single SMTP connection, each marked sent."""
    ledger = Ledger()
    to = addresses(200)
    outcome = ledger.send(mail, newsletter(to))
    assert outcome == BatchOutcome(sent=200, failed=0, deferred=0)
    assert sorted(sink.recipients) == sorted(to)
    assert sink.connections == 1
    assert ledger.sent == to and ledger.failed == {}


def test_every_message_has_text_and_html_a_message_id_and_one_click_unsubscribe(sink, mail):
    """Both parts, a Message-ID in the sender's domain, RFC 8058 headers and a visible unsubscribe link."""
    Ledger().send(mail, newsletter(addresses(2)))
    first, second = (item.parse() for item in sink.received)
    assert first.get_content_type() in ("multipart/mixed", "multipart/alternative")
    assert "<strong>New</strong> shoes" in first.get_body(("html",)).get_content()
    assert "**New** shoes" in first.get_body(("plain",)).get_content()
    to = first["To"].addresses[0].addr_spec
    assert first["List-Unsubscribe"] == f"<https://shop.example/u/token-{to}>"
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f'href="https://shop.example/u/token-{to}"' in first.get_body(("html",)).get_content()
    assert f"Unsubscribe: https://shop.example/u/token-{to}" in first.get_body(("plain",)).get_content()
    assert first["Message-ID"].endswith("@shop.example>") and first["Message-ID"] != second["Message-ID"]
    assert first["From"] == SENDER and first["Subject"] == "Spring news"


def test_a_long_unicode_paragraph_arrives_intact(sink, mail):
    """A 5,000-character line with accents is not refused for its length and arrives whole."""
    paragraph = "Ünïcode news, ça va. " * 250
    html, text = render_body(paragraph, "text")
    message = build_message(sender=SENDER, to_email="a@example.com", to_name="Zoë", subject="Café ☕",
                            html=html, text=text, unsubscribe_url="", unsubscribe_post_url="https://shop.example/u/x")
    assert Ledger().send(mail, [("a", message)]).sent == 1
    received = sink.messages[0]
    assert received["Subject"] == "Café ☕" and received["To"].addresses[0].display_name == "Zoë"
    assert paragraph.strip() in received.get_body(("plain",)).get_content()
    assert max(len(line) for line in sink.received[0].data.split(b"\r\n")) <= 998


# -- hostile names and subjects --------------------------------------------------------------------


def test_a_name_or_subject_with_a_line_break_adds_no_header(sink, mail):
    """"Eve\\r\\nBcc: x@evil" as a name and a subject stays inside its own header; nobody is Bcc'd."""
    evil = "Eve\r\nBcc: x@evil.example"
    ledger = Ledger()
    ledger.send(mail, newsletter(["eve@example.com"], name=evil, subject="Sale\r\nBcc: x@evil.example"))
    item = sink.received[0]
    message = item.parse()
    assert item.rcpt_tos == ("eve@example.com",) and sink.recipients == ["eve@example.com"]
    assert message["Bcc"] is None and "Bcc" not in message
    assert not any(line.lower().startswith(b"bcc:") for line in item.data.split(b"\r\n"))
    assert message["Subject"] == "Sale Bcc: x@evil.example"
    assert message["To"].addresses[0].display_name == "Eve Bcc: x@evil.example"
    assert message["To"].addresses[0].addr_spec == "eve@example.com"
    assert "Hello Eve Bcc: x@evil.example," in message.get_body(("plain",)).get_content()


def test_a_name_with_a_script_tag_is_shown_not_run(sink, mail):
    """<script> in a subscriber's name arrives escaped in the HTML part."""
    Ledger().send(mail, newsletter(["mal@example.com"], name="<script>alert('x')</script>"))
    html = sink.messages[0].get_body(("html",)).get_content()
    assert "Hello &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;," in html
    assert "<script>" not in html


def test_an_address_with_a_line_break_fails_alone_and_the_batch_goes_on(sink, mail):
    """A stored address carrying "\\r\\nBcc:" is reported as invalid; the others are delivered; nobody else is added."""
    ledger = Ledger()
    to = ["a@example.com", "b@example.com\r\nBcc: evil@example.com", "c@example.com"]
    outcome = ledger.send(mail, newsletter(to))
    assert outcome == BatchOutcome(sent=2, failed=1)
    assert sink.recipients == ["a@example.com", "c@example.com"]
    assert ledger.failed[to[1]].startswith("invalid address or header")


# -- refusals ---------------------------------------------------------------------------------------


def test_a_refused_recipient_is_reported_with_the_servers_words_and_the_rest_are_delivered(sink, mail):
    """A 550 for one address: on_failed gets "550 5.1.1 ... user unknown", the other nine arrive on the same connection."""
    sink.refuse("r5@example.com", 550)
    ledger = Ledger()
    to = addresses(10)
    outcome = ledger.send(mail, newsletter(to))
    assert outcome == BatchOutcome(sent=9, failed=1)
    assert ledger.failed == {"r5@example.com": "550 5.1.1 <r5@example.com>: user unknown"}
    assert sorted(sink.recipients) == sorted(set(to) - {"r5@example.com"})
    assert ledger.sent == [a for a in to if a != "r5@example.com"]
    assert sink.connections == 1


def test_a_message_rejected_after_its_content_is_reported_and_the_batch_goes_on(sink, mail):
    """A content filter's 554 after DATA fails that message only; the next ones still go over the same session."""
    sink.refuse_content(b"Subject: Casino", "554 5.7.1 Message rejected as spam")
    ledger = Ledger()
    items = [*newsletter(["a@example.com"]), *newsletter(["b@example.com"], subject="Casino night"),
             *newsletter(["c@example.com"])]
    outcome = ledger.send(mail, items)
    assert outcome == BatchOutcome(sent=2, failed=1)
    assert ledger.failed == {"b@example.com": "554 5.7.1 Message rejected as spam"}
    assert sink.recipients == ["a@example.com", "c@example.com"] and sink.connections == 1


def test_a_refused_sender_fails_the_batch_for_good_and_blames_no_recipient(sink, mail):
    """If the server refuses our From address, no retry helps and no subscriber is marked failed."""
    sink.refuse("news@shop.example", 553)
    ledger = Ledger()
    with pytest.raises(PermanentSMTPError, match="refuses our sender address: 553") as caught:
        ledger.send(mail, newsletter(addresses(5)))
    assert isinstance(caught.value, JobFailed), "the job fails with this message instead of retrying"
    assert ledger.sent == [] and ledger.failed == {} and sink.count == 0


# -- the server deferring, away, dying or slow ------------------------------------------------------


def test_a_server_deferring_everyone_hands_the_batch_back_without_marking_anything(sink, mail):
    """451 for every address: after a few deferrals in a row the batch stops with TransientSMTPError; nothing marked."""
    sink.refuse("*", 451)
    ledger = Ledger()
    with pytest.raises(TransientSMTPError, match="deferred 5 messages in a row") as caught:
        ledger.send(mail, newsletter(addresses(50)))
    assert isinstance(caught.value, TransientError), "the job runtime retries it later"
    assert caught.value.outcome == BatchOutcome(sent=0, failed=0, deferred=5)
    assert ledger.sent == [] and ledger.failed == {} and sink.count == 0


def test_a_deferred_recipient_is_left_for_the_retry_and_nobody_gets_two_messages(sink, mail):
    """A 451 for one address: the others go out, the batch is handed back, and the retry sends only that one."""
    sink.refuse("r3@example.com", 451)
    ledger = Ledger()
    to = addresses(10)
    with pytest.raises(TransientSMTPError, match="deferred 1 message") as caught:
        ledger.send(mail, newsletter(to))
    assert caught.value.outcome == BatchOutcome(sent=9, failed=0, deferred=1)
    assert "r3@example.com" not in ledger.sent and len(ledger.sent) == 9
    sink.accept()
    retry = ledger.send(mail, newsletter(to, skip=set(ledger.sent)))
    assert retry == BatchOutcome(sent=1)
    assert sorted(sink.recipients) == sorted(to)


def test_a_server_that_is_down_hands_the_batch_back_and_marks_nothing_sent():
    """Connection refused: a few reconnects with backoff, then TransientSMTPError; nothing is marked sent."""
    ledger = Ledger()
    with flask_mail(free_port()) as mail, pytest.raises(TransientSMTPError, match="mail server unavailable") as caught:
        ledger.send(mail, newsletter(addresses(5)), policy=QUICK)
    assert "ConnectionRefusedError" in str(caught.value) and "gave up after 3 attempts" in str(caught.value)
    assert caught.value.outcome == BatchOutcome() and ledger.sent == []


def test_a_server_dying_mid_batch_leaves_exactly_the_received_messages_marked_sent(sink, mail):
    """The server goes away after five messages: on_sent was called for those five and no others."""
    ledger = Ledger()

    def on_sent(key: str) -> None:
        ledger.on_sent(key)
        if len(ledger.sent) == 5:
            sink.stop()

    with pytest.raises(TransientSMTPError) as caught:
        send_batch(mail, newsletter(addresses(20)), on_sent=on_sent, on_failed=ledger.on_failed, policy=QUICK)
    assert caught.value.outcome.sent == 5
    assert ledger.sent == sink.recipients == addresses(5)


def test_a_dropped_connection_is_reopened_and_every_message_arrives_once(sink, mail):
    """A 421 (server closing the connection) mid-batch: reconnect, send that message again, finish; no repeats."""
    sink.refuse("r4@example.com", 421, times=1)
    ledger = Ledger()
    to = addresses(10)
    outcome = ledger.send(mail, newsletter(to), policy=QUICK)
    assert outcome == BatchOutcome(sent=10)
    assert sorted(sink.recipients) == sorted(to) and ledger.sent == to
    assert sink.connections == 2


def test_a_silent_server_times_out_instead_of_hanging_the_worker(sink):
    """A server that answers nothing in time: the batch is handed back after the timeouts, not stuck forever."""
    sink.delay = 1.0
    ledger = Ledger()
    started = time.monotonic()
    with flask_mail(sink.port) as mail, pytest.raises(TransientSMTPError, match="timed out"):
        ledger.send(mail, newsletter(addresses(3)), policy=SendPolicy(timeout=0.2, reconnects=1, backoff=0.01))
    assert time.monotonic() - started < 10
    assert ledger.sent == []


def test_cancelling_stops_before_the_next_message(sink, mail):
    """A cancel seen by check_cancelled ends the batch there; what was sent stays marked."""
    ledger = Ledger()

    def check_cancelled() -> None:
        if len(ledger.sent) == 3:
            raise JobCancelled("cancelled by the user")

    with pytest.raises(JobCancelled):
        ledger.send(mail, newsletter(addresses(10)), check_cancelled=check_cancelled)
    assert ledger.sent == sink.recipients == addresses(3)


# -- settings -------------------------------------------------------------------------------------


def test_mail_max_emails_opens_a_fresh_connection_every_n_messages(sink):
    """MAIL_MAX_EMAILS=4 and 10 messages: three connections, each message once."""
    with flask_mail(sink.port, MAIL_MAX_EMAILS=4) as mail:
        assert Ledger().send(mail, newsletter(addresses(10))) == BatchOutcome(sent=10)
    assert sorted(sink.recipients) == sorted(addresses(10)) and sink.connections == 3


def test_suppressed_sending_records_the_messages_without_connecting(sink):
    """With MAIL_SUPPRESS_SEND (Flask-Mail's testing mode) nothing is sent, yet record_messages() sees each one."""
    with flask_mail(sink.port, MAIL_SUPPRESS_SEND=True) as mail, mail.record_messages() as outbox:
        assert Ledger().send(mail, newsletter(addresses(3))) == BatchOutcome(sent=3)
    assert [m.recipients[0] for m in outbox] == [("Reader", a) for a in addresses(3)]
    assert sink.count == 0 and sink.connections == 0


# -- the shared rate limit -------------------------------------------------------------------------


def test_a_rate_limit_of_50_per_second_makes_100_sends_from_two_workers_take_about_2_seconds(sink, rate_key):
    """Two senders sharing one Redis limit of 50/s: 100 messages cannot all be out in much under 2 s."""
    redis, key = rate_key
    errors: list[BaseException] = []

    def worker(first: int) -> None:
        try:
            with flask_mail(sink.port) as mail:
                Ledger().send(mail, newsletter(addresses(100)[first:first + 50]),
                              rate_limiter=RateLimiter(redis, key, 50))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(first,)) for first in (0, 50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    assert errors == []
    assert sink.count == 100
    assert elapsed >= 1.8, f"100 sends at 50/s took only {elapsed:.2f}s"


def test_a_rate_of_zero_means_no_limit_and_no_redis_traffic(rate_key):
    """per_second <= 0: acquire() never waits and writes nothing to Redis."""
    redis, key = rate_key
    limiter = RateLimiter(redis, key, 0)
    assert all(limiter.acquire() == 0 for _ in range(1000))
    assert not redis.exists(key)


# -- the test tools themselves ---------------------------------------------------------------------


def test_the_development_sink_stores_each_message_as_an_eml_file(tmp_path):
    """The sink `make run` uses writes one readable .eml per message into its folder."""
    with MailSink(folder=tmp_path / "mail") as sink, smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as client:
        for n in (1, 2):
            client.sendmail("a@example.com", ["b@example.com"], f"Subject: note {n}\r\n\r\nhello\r\n".encode())
    files = sorted((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 2
    assert {f.read_bytes().split(b"\r\n")[0] for f in files} == {b"Subject: note 1", b"Subject: note 2"}


def test_the_delay_proxy_makes_a_local_server_answer_late(sink):
    """Through a 20 ms proxy each SMTP reply comes at least 20 ms late, and mail still arrives."""
    proxy = start_delay_proxy(sink.port, delay=0.02)
    try:
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", proxy.listen_port, timeout=5) as client:  # greeting, then EHLO, MAIL, RCPT,
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: far\r\n\r\nhi\r\n")  # DATA, end
        assert time.monotonic() - started >= 6 * 0.02
    finally:
        proxy.stop()
    assert sink.recipients == ["b@example.com"]
