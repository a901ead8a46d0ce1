"""A TLS-terminating TCP relay, for testing Kafka clients over TLS against a broker that
speaks only plaintext (the embedded Tansu 0.6.0 cannot serve TLS: see the README,
"Production deployment").

Every connection is accepted with TLS (optionally requiring a client certificate that
chains to a given CA) and its bytes relayed both ways to the plaintext upstream. The
broker must advertise the relay's address, so that clients come back through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from types import TracebackType


class TlsProxy:
    """``with TlsProxy(context, upstream, host, port): ...`` serves TLS on ``host:port``;
    ``handshake_failures`` counts the connections it refused."""

    def __init__(
        self, context: ssl.SSLContext, upstream: tuple[str, int], host: str, port: int
    ) -> None:
        self.context = context
        self.upstream = upstream
        self.host = host
        self.port = port
        self.handshake_failures = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await writer.start_tls(self.context)
        except (ssl.SSLError, OSError):
            # Refused: a client that speaks plaintext, trusts another CA, or shows no
            # client certificate.
            self.handshake_failures += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._relay(reader, up_writer), self._relay(up_reader, writer))

    def start(self) -> TlsProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, self.host, self.port), self._loop
        ).result(timeout=10)
        return self

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> TlsProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
