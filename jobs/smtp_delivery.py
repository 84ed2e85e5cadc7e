"""Sending mail in batches through Flask-Mail's settings: one reused connection, exactly-once bookkeeping, rate limit.

``send_batch`` calls ``on_sent(key)`` the moment the SMTP server accepts a message and
before the next one goes out; the caller commits that fact there, so if the process
dies only the one message in flight is ambiguous. The server's answers decide the rest:

- 5xx for a recipient or a message (user unknown, rejected content, invalid address):
  ``on_failed(key, "550 5.1.1 ...")`` and the batch moves on;
- 4xx for a recipient or a message (greylisting, mailbox full): the message is left
  alone (neither sent nor failed) and the batch moves on; at the end, or after several
  deferrals in a row, TransientSMTPError hands the batch back so a retry sends the rest;
- connection refused, reset, dropped, timed out, 421: reconnect with exponential backoff
  and jitter and try the same message again; if that keeps failing, TransientSMTPError;
- 5xx for the sender or for our login: PermanentSMTPError (a settings problem that no
  retry fixes, and no reason to mark every recipient failed).
"""

from __future__ import annotations

import contextlib
import email.charset
import email.policy
import enum
import html as html_lib
import logging
import random
import smtplib
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import make_msgid, parseaddr
from typing import TypeVar

from flask import current_app
from flask_mail import BadHeaderError, Mail, Message, email_dispatched, sanitize_address, sanitize_addresses

from jobs.errors import JobFailed, TransientError
from webapp.newsletter_content import CONTROL, clean_name, safe_header

log = logging.getLogger(__name__)

Key = TypeVar("Key")

# Flask-Mail registers UTF-8 bodies as raw 8-bit, so a long paragraph becomes one line
# over SMTP's 998-character limit and servers refuse it ("500 Line too long"). Base64
# keeps every line short and is encoded in C (quoted-printable is pure Python and cost
# more per message than the send); registered after flask_mail's import, it wins.
email.charset.add_charset("utf-8", email.charset.SHORTEST, email.charset.BASE64, "utf-8")

# Flask-Mail builds messages with the classic (compat32) email classes, then switches the
# policy to email.policy.SMTP for output, which re-parses every header through the modern
# header registry: measured at ~7 ms of a ~12 ms send. The classic policy with CRLF line
# ends writes the same message in a fraction of that.
CLASSIC_SMTP = email.policy.compat32.clone(linesep="\r\n")


@dataclass(frozen=True)
class SendPolicy:
    """How patient send_batch is with a mail server that is slow, away or deferring."""

    timeout: float = 30.0  # seconds to wait for any one reply, so a silent server cannot hang a worker
    reconnects: int = 3  # connection failures in a row before the batch is handed back
    backoff: float = 0.5  # seconds before the first reconnect; doubles each time, times a random 0.5-1.5
    deferrals_in_a_row: int = 5  # consecutive messages answered 4xx before the batch is handed back


DEFAULT_POLICY = SendPolicy()


@dataclass
class BatchOutcome:
    """What one batch did: accepted, refused for good, and left for a retry."""

    sent: int = 0
    failed: int = 0
    deferred: int = 0


class TransientSMTPError(TransientError):
    """The mail server is away or deferring; retry the batch later (what was sent is in ``outcome``)."""

    def __init__(self, message: str, outcome: BatchOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class PermanentSMTPError(JobFailed):
    """The mail server refuses the whole batch (our sender address or our login): fix the settings."""

    def __init__(self, message: str, outcome: BatchOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class BulkMessage(Message):
    """A Flask-Mail message that serialises quickly, for sending thousands."""

    def as_bytes(self) -> bytes:
        """The message as sent on the wire."""
        msg = self._message()
        msg.policy = CLASSIC_SMTP
        return msg.as_bytes()


def build_message(*, sender: str, to_email: str, to_name: str | None, subject: str, html: str, text: str,
                  unsubscribe_url: str, unsubscribe_post_url: str) -> Message:
    """A text + HTML message with a visible unsubscribe link and one-click unsubscribe headers (RFC 8058).

    ``unsubscribe_url`` is the link shown at the foot of both parts (empty: no footer);
    ``unsubscribe_post_url`` is the HTTPS address a mail client POSTs to. Every header
    value is cleaned so that no name or subject can start a header of its own.
    """
    name = safe_header(clean_name(to_name))
    address = (to_email or "").strip()
    page_url = _one_line(unsubscribe_url)
    if page_url:
        text = f"{text.rstrip()}\n\n--\nUnsubscribe: {page_url}\n"
        html = (f'{html}\n<p style="font-size:12px;color:#666666">'
                f'<a href="{html_lib.escape(page_url, quote=True)}">Unsubscribe</a></p>')
    message = BulkMessage(
        subject=safe_header(subject),
        sender=safe_header(sender),
        recipients=[(name, address) if name else address],
        body=text,
        html=html,
        extra_headers={
            "List-Unsubscribe": f"<{_one_line(unsubscribe_post_url)}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    # Flask-Mail names the Message-ID after this machine; the sender's domain is what receivers expect.
    domain = parseaddr(safe_header(sender))[1].rpartition("@")[2]
    message.msgId = make_msgid(domain=domain or None)
    return message


def _one_line(url: str | None) -> str:
    """A URL with every control character and space removed (never shortened, unlike a subject)."""
    return "".join(CONTROL.sub("", url or "").split())


class Answer(enum.Enum):
    """What the server's reply to one message means for the batch."""

    ACCEPTED = "accepted"
    REFUSED = "refused"  # this message, for good
    DEFERRED = "deferred"  # this message, for now
    RECONNECT = "reconnect"  # the connection, not the message
    FATAL = "fatal"  # every message: our sender or login


def _server_words(code: int, reply: bytes | str) -> str:
    """'550 5.1.1 user unknown' from a code and a reply."""
    text = reply.decode("utf-8", errors="replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(f"{code} {text}".split())


def _classify(exc: Exception) -> tuple[Answer, str]:
    """How an error from sending one message is treated, and the words for the report."""
    if isinstance(exc, (BadHeaderError, ValueError)):  # ValueError includes UnicodeError
        return Answer.REFUSED, f"invalid address or header ({type(exc).__name__}: {exc})"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Answer.REFUSED, f"the server cannot take this message: {exc}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        code, reply = next(iter(exc.recipients.values()))
    elif isinstance(exc, smtplib.SMTPResponseException):
        code, reply = exc.smtp_code, exc.smtp_error  # type: ignore[assignment]  # typeshed: bytes | str
    else:  # refused, reset, dropped, timed out
        return Answer.RECONNECT, f"{type(exc).__name__}: {exc}"
    words = _server_words(code, reply)
    if code == 421 or code < 400:  # 421: the server is closing the connection
        return Answer.RECONNECT, words
    if code < 500:
        return Answer.DEFERRED, words
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return Answer.FATAL, f"the mail server refuses our sender address: {words}"
    return Answer.REFUSED, words


def _connect_failure(exc: Exception) -> tuple[Answer, str]:
    """How an error while opening the session is treated: our login or TLS refused is fatal, the rest retried."""
    if isinstance(exc, smtplib.SMTPAuthenticationError) and exc.smtp_code >= 500:
        return Answer.FATAL, f"the mail server refuses our login: {_server_words(exc.smtp_code, exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Answer.FATAL, f"the mail server does not offer what the settings ask for: {exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Answer.FATAL, f"the mail server's certificate is not trusted: {exc.verify_message}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return Answer.RECONNECT, _server_words(exc.smtp_code, exc.smtp_error)
    return Answer.RECONNECT, f"{type(exc).__name__}: {exc}"


def _transmit(host: smtplib.SMTP | None, message: Message) -> None:
    """Hand one message to the server; returns only once the server accepted it."""
    if not message.send_to:
        raise ValueError("the message has no recipient")
    if message.has_bad_headers():
        raise BadHeaderError("a header contains a line break")
    if message.date is None:
        message.date = time.time()
    if host is not None:
        host.sendmail(sanitize_address(message.sender), sanitize_addresses(message.send_to), message.as_bytes(),
                      message.mail_options, message.rcpt_options)
    # Flask-Mail's signal, so mail.record_messages() sees what was sent.
    email_dispatched.send(current_app._get_current_object(), message=message)  # type: ignore[attr-defined]


class _Session:
    """The batch's one SMTP session, opened from Flask-Mail's settings and reopened when it drops.

    Flask-Mail's own Connection is not used: it has no timeout or certificate check, and
    after MAIL_MAX_EMAILS messages it reconnects inside send(), so a failed reconnect would
    look like a failed send of a message the server had already accepted.
    """

    def __init__(self, settings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self.host: smtplib.SMTP | None = None
        self.is_open = False
        self.accepted = 0  # on this session, for MAIL_MAX_EMAILS

    def _open(self) -> None:
        """Connect, STARTTLS and log in as configured (nothing at all when sending is suppressed)."""
        self.is_open, self.accepted = True, 0
        settings = self.settings
        if settings.suppress:
            return
        # Loading the system's certificates takes milliseconds: only when TLS is asked for.
        context = ssl.create_default_context() if settings.use_ssl or settings.use_tls else None
        if settings.use_ssl:
            host: smtplib.SMTP = smtplib.SMTP_SSL(settings.server, settings.port, timeout=self.timeout,
                                                  context=context)
        else:
            host = smtplib.SMTP(settings.server, settings.port, timeout=self.timeout)
        self.host = host
        if settings.use_tls:
            host.starttls(context=context)
        if settings.username and settings.password:
            host.login(settings.username, settings.password)

    def send(self, message: Message) -> tuple[Answer, str]:
        """Send one message and say what the server's answer means."""
        if not self.is_open:
            try:
                self._open()
            except (smtplib.SMTPException, OSError) as exc:
                self.drop()
                return _connect_failure(exc)
        try:
            _transmit(self.host, message)
        except (BadHeaderError, ValueError, smtplib.SMTPException, OSError) as exc:
            return _classify(exc)
        self.accepted += 1
        return Answer.ACCEPTED, ""

    def after_accepted(self) -> None:
        """Start a new session next time once MAIL_MAX_EMAILS went over this one."""
        if self.settings.max_emails and self.accepted >= self.settings.max_emails:
            self.close()

    def reset(self) -> None:
        """RSET after a refusal (smtplib skips it when the DATA command itself is refused)."""
        if self.host is None:
            return
        try:
            self.host.rset()
        except (smtplib.SMTPException, OSError):
            self.drop()

    def drop(self) -> None:
        """Forget a broken session without talking to the server."""
        if self.host is not None:
            self.host.close()
        self.host, self.is_open = None, False

    def close(self) -> None:
        """Say QUIT if the server is still listening, then close."""
        if self.host is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.host.quit()
        self.drop()


def send_batch(
    mail: Mail,
    items: Iterable[tuple[Key, Message]],
    *,
    on_sent: Callable[[Key], None],
    on_failed: Callable[[Key, str], None],
    rate_limiter: RateLimiter | None = None,
    check_cancelled: Callable[[], None] | None = None,
    policy: SendPolicy = DEFAULT_POLICY,
) -> BatchOutcome:
    """Send ``items`` ((key, message) pairs) over one reused connection; see the module docstring."""
    session = _Session(mail.connect().mail, policy.timeout)  # raises if the app has no Flask-Mail
    outcome = BatchOutcome()
    troubles = 0  # connection failures since the server last answered a message
    deferrals = 0  # consecutive messages deferred
    try:
        for key, message in items:
            if check_cancelled is not None:
                check_cancelled()
            if rate_limiter is not None:
                rate_limiter.acquire()
            answer, words = session.send(message)
            while answer is Answer.RECONNECT:
                # The message may or may not have arrived (the one ambiguous case): it is sent again.
                session.drop()
                troubles += 1
                if troubles > policy.reconnects:
                    raise TransientSMTPError(f"mail server unavailable ({words}); gave up after {troubles} attempts",
                                             outcome)
                delay = policy.backoff * 2 ** (troubles - 1) * random.uniform(0.5, 1.5)
                log.warning("SMTP connection problem (%s); reconnecting in %.2fs", words, delay)
                time.sleep(delay)
                if check_cancelled is not None:
                    check_cancelled()
                answer, words = session.send(message)
            troubles = 0
            if answer is Answer.ACCEPTED:
                outcome.sent += 1
                deferrals = 0
                on_sent(key)
                session.after_accepted()
            elif answer is Answer.REFUSED:
                session.reset()
                outcome.failed += 1
                deferrals = 0
                on_failed(key, words)
            elif answer is Answer.DEFERRED:
                session.reset()
                outcome.deferred += 1
                deferrals += 1
                log.info("SMTP deferred a message (%s); it is left for the retry", words)
                if deferrals >= policy.deferrals_in_a_row:
                    raise TransientSMTPError(f"the mail server deferred {deferrals} messages in a row "
                                             f"(last: {words})", outcome)
            else:
                raise PermanentSMTPError(words, outcome)
    finally:
        session.close()
    if outcome.deferred:
        raise TransientSMTPError(f"the mail server deferred {outcome.deferred} message(s); "
                                 "they are left for a retry", outcome)
    return outcome


# Reserves the next send slot for every process sharing the key and returns how many
# microseconds the caller must wait for it. Times are Redis's own clock in whole
# microseconds, so workers with skewed clocks still share one schedule.
_RESERVE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
local following = slot + interval
redis.call('SET', KEYS[1], string.format('%d', following), 'PX', math.floor((following - now) / 1000) + 1000)
return slot - now
"""


class RateLimiter:
    """At most ``per_second`` sends per second across every process that shares ``redis`` and ``key``.

    Sends are spaced evenly (no bursts): each acquire() takes the next free slot, one
    interval after the previous one, and sleeps until it comes. ``per_second <= 0`` means
    no limit and no Redis traffic.
    """

    def __init__(self, redis, key: str, per_second: float) -> None:
        self.key = key
        self.per_second = per_second
        self.interval_us = round(1_000_000 / per_second) if per_second > 0 else 0
        self._reserve = redis.register_script(_RESERVE_SLOT) if self.interval_us else None

    def acquire(self) -> float:
        """Block until this process may send one message; return the seconds waited."""
        if self._reserve is None:
            return 0.0
        wait = int(self._reserve(keys=[self.key], args=[self.interval_us])) / 1_000_000
        if wait > 0:
            time.sleep(wait)
        return wait
