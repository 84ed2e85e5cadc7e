"""A real SMTP server that keeps what it receives: aiosmtpd on localhost, for development, tests and benchmarks.

In tests::

    with MailSink() as sink:              # a free port, served from a background thread
        sink.refuse("bob@example.com", 550)         # "550 5.1.1 <bob@example.com>: user unknown"
        sink.refuse("*", 451, times=3)              # defer the next three addresses, whoever they are
        sink.refuse_content("casino", "554 5.7.1 spam")  # refuse, after DATA, any message containing it
        sink.delay = 0.02                           # every reply 20 ms late, the greeting included
        ...send to ("127.0.0.1", sink.port)...
        sink.messages, sink.recipients, sink.connections

For development (``make run``), ``python scripts/mail_sink.py --port 8025 --dir var/mail``
stores each message as an .eml file, which the Dev mailbox page lists.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

# The words a real server would add after each code, so reports in tests read true to life.
REPLY_TEXT = {
    421: "4.3.2 Service shutting down, closing connection",
    450: "4.2.1 <{address}>: mailbox busy, try again later",
    451: "4.7.1 <{address}>: temporary failure, try again later",
    452: "4.2.2 <{address}>: mailbox full",
    550: "5.1.1 <{address}>: user unknown",
    553: "5.1.3 <{address}>: address not allowed",
    554: "5.7.1 <{address}>: rejected",
}
EVERYONE = "*"


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Received:
    """One message the sink accepted: envelope, raw bytes, and which connection brought it (1 = first)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    connection: int

    def parse(self) -> EmailMessage:
        """The message parsed with the modern email API."""
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass
class _Refusal:
    reply: str
    times: int | None  # None: for as long as the refusal stands


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP session, counting connections and delaying every reply by the sink's delay."""

    def __init__(self, handler, *, sink: MailSink, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.sink = sink
        self.connection_number = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Number the connection before the greeting goes out."""
        super().connection_made(transport)
        self.connection_number = self.sink._connected(self)

    def connection_lost(self, error: Exception | None) -> None:
        """Forget the connection."""
        self.sink._disconnected(self)
        super().connection_lost(error)

    async def push(self, status) -> None:
        """Send one reply, late if the sink says so."""
        if self.sink.delay > 0:
            await asyncio.sleep(self.sink.delay)
        await super().push(status)


class _Handler:
    """aiosmtpd handler: refuse the chosen addresses, keep every message."""

    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_MAIL(self, server: _SinkSMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        """Accept the sender unless it is refused."""
        reply = self.sink._refusal_for(address, sender=True)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: _SinkSMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        """Accept the recipient unless it is refused."""
        reply = self.sink._refusal_for(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: _SinkSMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message (and write it as an .eml file when the sink has a folder)."""
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", errors="surrogateescape")
        refusal = self.sink._keep(Received(envelope.mail_from or "", tuple(envelope.rcpt_tos), data,
                                           server.connection_number))
        return refusal or "250 2.0.0 Message accepted"


class _SinkController(Controller):
    """aiosmtpd's threaded controller, building our SMTP session class."""

    def __init__(self, sink: MailSink, **kwargs) -> None:
        self.sink = sink
        super().__init__(_Handler(sink), **kwargs)

    def factory(self) -> _SinkSMTP:
        """One session per connection."""
        return _SinkSMTP(self.handler, sink=self.sink, **self.SMTP_kwargs)


class MailSink:
    """An SMTP server on localhost that accepts everything unless told otherwise and keeps it all."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, folder: str | Path | None = None,
                 delay: float = 0.0) -> None:
        self.host = host
        self.port = port or free_port()
        self.folder = Path(folder) if folder else None
        self.delay = delay  # seconds before every reply; change it at any time
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._refusals: dict[str, _Refusal] = {}
        self._content_refusals: dict[bytes, str] = {}
        self._connections = 0
        self._open: set[_SinkSMTP] = set()
        self._controller: _SinkController | None = None

    # -- running ----------------------------------------------------------------------------------

    def start(self) -> MailSink:
        """Listen in a background thread; returns once the server answers."""
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._controller = _SinkController(self, hostname=self.host, port=self.port, ready_timeout=10)
        # The controller's readiness probe waits 1 s at most for the greeting: no delay for it.
        wanted, self.delay = self.delay, 0.0
        try:
            self._controller.start()
        finally:
            self.delay = wanted
        with self._lock:
            self._connections = 0  # the probe was not a client
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections (safe to call twice)."""
        controller, self._controller = self._controller, None
        if controller is None:
            return
        # Close client connections first: aiosmtpd's stop() only cancels their tasks and
        # would leave the sockets to the garbage collector.
        with contextlib.suppress(TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._hang_up(), controller.loop).result(5)
        controller.stop()

    async def _hang_up(self) -> None:
        """Close every open client connection (runs on the server's loop)."""
        with self._lock:
            sessions = list(self._open)
        for session in sessions:
            if session.transport is not None:
                session.transport.close()
        for _ in range(3):  # let connection_lost run
            await asyncio.sleep(0)

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- what arrived -----------------------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        """Every accepted message so far, in order of arrival."""
        with self._lock:
            return list(self._received)

    @property
    def messages(self) -> list[EmailMessage]:
        """Every accepted message, parsed (parsing waits until asked: it is the slow part)."""
        return [item.parse() for item in self.received]

    @property
    def recipients(self) -> list[str]:
        """Every accepted envelope recipient, in order, repeats included."""
        return [rcpt for item in self.received for rcpt in item.rcpt_tos]

    @property
    def count(self) -> int:
        """How many messages arrived."""
        with self._lock:
            return len(self._received)

    @property
    def connections(self) -> int:
        """How many client connections were opened since start() (or clear())."""
        with self._lock:
            return self._connections

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` messages arrived; False if they did not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def clear(self) -> None:
        """Forget the messages and the connection count (refusals and delay stay)."""
        with self._lock:
            self._received.clear()
            self._connections = 0

    # -- behaviour --------------------------------------------------------------------------------

    def refuse(self, address: str, reply: int | str = 550, *, times: int | None = None) -> None:
        """Answer RCPT TO (and MAIL FROM) for ``address`` with an error; "*": every recipient.

        ``reply`` is a code (550, 451, 421... with a realistic text) or a whole reply line;
        ``times`` limits the refusal to the next few matching commands.
        """
        if isinstance(reply, int):
            reply = f"{reply} {REPLY_TEXT.get(reply, '<{address}>: refused')}"
        else:
            reply = reply.replace("{", "{{").replace("}", "}}")
        with self._lock:
            self._refusals[address.lower()] = _Refusal(reply, times)

    def refuse_content(self, marker: str | bytes, reply: str = "554 5.7.1 Message rejected as spam") -> None:
        """Answer the end of DATA with ``reply`` for any message whose raw bytes contain ``marker``."""
        with self._lock:
            self._content_refusals[marker.encode() if isinstance(marker, str) else marker] = reply

    def accept(self, address: str | None = None) -> None:
        """Lift the refusal of ``address``, or every refusal (content ones too) when None."""
        with self._lock:
            if address is None:
                self._refusals.clear()
                self._content_refusals.clear()
            else:
                self._refusals.pop(address.lower(), None)

    # -- called from the server thread -----------------------------------------------------------

    def _connected(self, session: _SinkSMTP) -> int:
        with self._lock:
            self._open.add(session)
            self._connections += 1
            return self._connections

    def _disconnected(self, session: _SinkSMTP) -> None:
        with self._lock:
            self._open.discard(session)

    def _refusal_for(self, address: str, *, sender: bool = False) -> str | None:
        keys = (address.lower(),) if sender else (address.lower(), EVERYONE)
        with self._lock:
            for key in keys:
                refusal = self._refusals.get(key)
                if refusal is None:
                    continue
                if refusal.times is not None:
                    refusal.times -= 1
                    if refusal.times <= 0:
                        del self._refusals[key]
                return refusal.reply.format(address=address)
        return None

    def _keep(self, item: Received) -> str | None:
        """Keep a message; or the reply refusing it when its content is refused."""
        with self._lock:
            for marker, reply in self._content_refusals.items():
                if marker in item.data:
                    return reply
            self._received.append(item)
        if self.folder is not None:
            # Written under a temporary name and renamed, so the Dev mailbox never reads half a file.
            name = f"{time.time():.6f}-{uuid.uuid4().hex[:8]}"
            partial = self.folder / f".{name}.part"
            partial.write_bytes(item.data)
            os.replace(partial, self.folder / f"{name}.eml")
        return None


def serve(host: str = "127.0.0.1", port: int = 8025, folder: str | Path = "var/mail") -> None:
    """Run the sink in the foreground, storing .eml files in ``folder``, until interrupted."""
    sink = MailSink(host=host, port=port, folder=folder).start()
    print(f"SMTP sink listening on {host}:{port}, storing messages in {folder}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()


def main(argv: list[str] | None = None) -> None:
    """Command line: the development mail sink."""
    parser = argparse.ArgumentParser(description="Local SMTP sink that stores every message as an .eml file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", default="var/mail", help="folder for the .eml files (created if missing)")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.dir)


if __name__ == "__main__":
    main()
