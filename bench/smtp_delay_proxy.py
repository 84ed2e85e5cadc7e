"""A TCP proxy on localhost that delivers the server's bytes late, so a local SMTP sink acts like a distant one.

Every chunk the server sends reaches the client ``delay`` seconds after it left the
server: a one-way latency, not a bandwidth limit, so chunks in flight do not queue
behind each other. SMTP is lock-step, so each reply (greeting, MAIL, RCPT, DATA, end of
data) costs one ``delay``: about 4 per message on a reused connection.

    proxy = start_delay_proxy(sink.port, delay=0.02)
    smtplib.SMTP("127.0.0.1", proxy.listen_port) ...
    proxy.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class DelayProxy:
    """Forward ``listen_port`` on localhost to ``target_host:target_port``, delaying server -> client bytes."""

    def __init__(self, listen_port: int = 0, target_port: int = 25, delay: float = 0.02, *,
                 target_host: str = "127.0.0.1", listen_host: str = "127.0.0.1") -> None:
        self.listen_host, self.listen_port = listen_host, listen_port  # 0: any free port, known after start()
        self.target_host, self.target_port = target_host, target_port
        self.delay = delay
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="smtp-delay-proxy", daemon=True)

    # -- the event loop thread ---------------------------------------------------------------------

    def _run(self) -> None:
        """Open the listening socket, then serve until stop()."""
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, self.listen_host, self.listen_port))
            self.listen_port = self._server.sockets[0].getsockname()[1]
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """One client: connect to the target and copy both ways, the replies late."""
        task = asyncio.current_task()
        self._tasks.add(task)
        self._writers.add(client_writer)
        self.connections += 1
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                client_writer.close()
                return
            self._writers.add(server_writer)
            await asyncio.gather(self._copy(client_reader, server_writer, 0.0),
                                 self._copy(server_reader, client_writer, self.delay))
            self._writers.discard(server_writer)
        finally:
            self._writers.discard(client_writer)
            self._tasks.discard(task)

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
        """Copy one direction, each chunk written ``delay`` seconds after it was read; close at the end."""
        loop = asyncio.get_running_loop()
        due: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await due.get()) is not None:
                when, data = item
                if when > loop.time():
                    await asyncio.sleep(when - loop.time())
                writer.write(data)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                due.put_nowait((loop.time() + delay, data))
            due.put_nowait(None)
            await delivering
        except (ConnectionError, OSError):
            pass
        finally:
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await delivering
            writer.close()

    async def _shutdown(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
        # Closing the sockets ends each copy loop by itself (cancelling the tasks would not close them).
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        self._loop.stop()

    # -- the caller's thread -----------------------------------------------------------------------

    def start(self) -> DelayProxy:
        """Serve from a background thread; returns once the port is open."""
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the delay proxy did not start within 10 s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Close the port and every connection through it, and end the thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            self._thread.join(10)

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_delay_proxy(target_port: int, delay: float = 0.02, *, target_host: str = "127.0.0.1",
                      listen_port: int = 0) -> DelayProxy:
    """A running proxy to ``target_host:target_port`` adding ``delay`` seconds to every server reply."""
    return DelayProxy(listen_port, target_port, delay, target_host=target_host).start()
