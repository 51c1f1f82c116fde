"""The HTTP server's connections: a response leaves in one send, not two.

uvicorn writes a response's status line and headers as soon as the app sends them,
and its body in a second write: two send syscalls and two TCP segments for every
answer, which on loopback wakes the client twice. On the 2-core bench machine (a VM) a
send costs the sender about 35 µs of CPU, waking the process at the other end included.

`HttpProtocol` gives uvicorn's protocol a transport that holds a write until the next
one, and sends both together: the head of a response is held until its body, which
the app sends in the same turn of the event loop (nothing between them waits), so the
answer leaves in one write, exactly when its body would have. A write with nothing
after it in that turn (the head of a HEAD answer) leaves at the end of the turn, so
nothing waits longer than before, and order is kept.

Sending at the end of the turn in every case was measured worse under load: the
answer then waited for every other callback the loop had ready, and `make bench`
gave 33.9 and 31.2 deals/s against 39.4 and 37.4 without this round's HTTP changes,
accept-to-won p99 at half load 309 and 317 ms against 233 and 229 (docs/performance.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes of one event-loop turn leave as one `write`."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            # Held until the next write or the end of this turn, whichever comes first.
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            # The body after its head: both leave now, as the body alone would have.
            self._held = None
            self._send(held + data)

    def writelines(self, chunks: Any) -> None:
        for data in chunks:
            self.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held:
            self._send(held)

    def _send(self, data: bytes) -> None:
        # A client that went away meanwhile gets nothing, as asyncio's loop would drop
        # the write; uvloop would raise instead, in a callback of the loop's.
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        held = len(self._held) if self._held else 0
        return held + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        # Everything else (flow control, extra info, is_closing) is the socket's own.
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing: Any = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(coalescing)
