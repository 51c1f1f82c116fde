"""The HTTP server's connections: a response leaves in one send, not two.

uvicorn writes a response's status line and headers as soon as the app sends them,
and its body in a second write: two send syscalls and two TCP segments for every
answer, which on loopback wakes the client twice. On the 2-core bench machine (a VM) a
send costs the sender about 35 µs of CPU, waking the process at the other end included.

`HttpProtocol` gives uvicorn's protocol a transport that holds what is written during
one turn of the event loop and sends it together at the end of that turn: the app
sends the start and the body of a response in one turn (nothing between them waits),
so they leave as one write. Nothing is held longer than that turn, so a streamed or
bodiless response (HEAD) goes out as promptly as before, and order is kept.
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
        self._held: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is None:
            self._held = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:
            self._held.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for data in chunks:
            self.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held:
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

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
        held = sum(len(data) for data in self._held) if self._held else 0
        return held + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        # Everything else (flow control, extra info, is_closing) is the socket's own.
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing: Any = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(coalescing)
