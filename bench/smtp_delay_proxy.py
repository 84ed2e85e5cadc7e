"""A TCP proxy on localhost that delays every server reply, to act like an SMTP server far away."""

from __future__ import annotations

import asyncio
import threading


class DelayProxy:
    """Forward 127.0.0.1:listen_port to target_port, sleeping ``delay`` before each server -> client chunk."""

    def __init__(self, listen_port: int, target_port: int, delay: float) -> None:
        self.listen_port, self.target_port, self.delay = listen_port, target_port, delay
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    async def _pipe(self, reader, writer, delay: float) -> None:
        """Copy one direction, delaying each chunk."""
        try:
            while data := await reader.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader, client_writer) -> None:
        """Connect to the target and pipe both ways."""
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(client_reader, server_writer, 0),
                             self._pipe(server_reader, client_writer, self.delay))

    def _serve(self) -> None:
        """Run the proxy's event loop."""
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.listen_port))
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()

    def start(self) -> DelayProxy:
        """Start in a background thread."""
        self.thread.start()
        self.ready.wait(5)
        return self

    def stop(self) -> None:
        """Stop the loop."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
