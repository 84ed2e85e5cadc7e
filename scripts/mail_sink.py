"""A local SMTP server that keeps every message: the development mail sink and the tests' mail server.

``python scripts/mail_sink.py --port 8025 --dir var/mail`` stores each message as an
.eml file (the Dev mailbox page lists them). Tests use ``MailSink`` directly: it
keeps messages in memory, can refuse chosen recipients with a given SMTP code,
and can delay its replies.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import socket
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SinkHandler:
    """aiosmtpd handler: refuse chosen recipients, otherwise keep the message."""

    def __init__(self, folder: Path | None, refuse: dict[str, str], delay: float) -> None:
        self.folder = folder
        self.refuse = refuse
        self.delay = delay
        self.raw: list[bytes] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options):
        """Accept the recipient unless told to refuse it (e.g. '550 5.1.1 user unknown')."""
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = self.refuse.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message (in memory, and as an .eml file when a folder is set)."""
        if self.delay:
            await asyncio.sleep(self.delay)
        # Keep the bytes; parsing waits until someone reads the messages (it is the slow part).
        with self.lock:
            self.raw.append(envelope.content)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        if self.folder is not None:
            name = f"{time.time():.6f}-{uuid.uuid4().hex[:8]}.eml"
            (self.folder / name).write_bytes(envelope.content)
        return "250 Message accepted"


class MailSink:
    """A running SMTP sink on localhost; ``start()``/``stop()`` or use as a context manager."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", folder: str | Path | None = None,
                 refuse: dict[str, str] | None = None, delay: float = 0.0) -> None:
        self.host = host
        self.port = port or free_port()
        folder_path = Path(folder) if folder else None
        if folder_path is not None:
            folder_path.mkdir(parents=True, exist_ok=True)
        self.handler = SinkHandler(folder_path, {k.lower(): v for k, v in (refuse or {}).items()}, delay)
        self.controller = Controller(self.handler, hostname=host, port=self.port)

    @property
    def messages(self) -> list[EmailMessage]:
        """Every message received so far, parsed."""
        with self.handler.lock:
            raw = list(self.handler.raw)
        return [email.message_from_bytes(content, policy=email.policy.default) for content in raw]

    @property
    def count(self) -> int:
        """How many messages arrived (without parsing them)."""
        with self.handler.lock:
            return len(self.handler.raw)

    def clear(self) -> None:
        """Forget every message and envelope."""
        with self.handler.lock:
            self.handler.raw.clear()
            self.handler.envelopes.clear()

    def refuse(self, address: str, reply: str) -> None:
        """Answer RCPT TO for ``address`` with ``reply`` (e.g. '451 4.7.1 try later')."""
        self.handler.refuse[address.lower()] = reply

    def start(self) -> MailSink:
        """Start serving in a background thread."""
        self.controller.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.controller.stop()

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    """Run the sink until interrupted."""
    parser = argparse.ArgumentParser(description="Local SMTP sink that stores messages as .eml files")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", default="var/mail", help="folder for .eml files")
    args = parser.parse_args()
    sink = MailSink(port=args.port, host=args.host, folder=args.dir).start()
    print(f"mail sink listening on {args.host}:{args.port}, storing messages in {args.dir}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
