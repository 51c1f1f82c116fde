"""A response leaves in one send: the coalescing transport, alone and under uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dealflow_common.http.server import CoalescingTransport, HttpProtocol
from dealflow_common.testing import uvicorn_serving


class RecordingTransport:
    """Stands in for a socket: what was written, call by call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return f"extra:{name}"


async def a_turn() -> None:
    """Let the event loop run what was scheduled in the turn before."""
    await asyncio.sleep(0)


def coalescing() -> tuple[CoalescingTransport, RecordingTransport]:
    socket = RecordingTransport()
    return CoalescingTransport(socket, asyncio.get_running_loop()), socket  # type: ignore[arg-type]


async def test_a_head_leaves_with_its_body_when_the_body_is_written() -> None:
    transport, socket = coalescing()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert socket.writes == []
    transport.write(b'{"a": 1}')
    # At once, not at the end of the turn: the answer waits for nothing else ready.
    assert socket.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"a": 1}']
    await a_turn()
    assert socket.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"a": 1}']


async def test_a_lone_write_leaves_at_the_end_of_its_turn() -> None:
    # A HEAD answer: the head alone, no body ever follows.
    transport, socket = coalescing()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await a_turn()
    assert socket.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
    transport.write(b"next")
    await a_turn()
    assert socket.writes == [b"HTTP/1.1 200 OK\r\n\r\n", b"next"]


async def test_close_sends_what_is_held_first() -> None:
    transport, socket = coalescing()
    transport.write(b"last words")
    transport.close()
    assert socket.writes == [b"last words"]
    assert socket.closed
    await a_turn()
    assert socket.writes == [b"last words"]


async def test_writelines_and_write_eof_keep_the_order() -> None:
    transport, socket = coalescing()
    transport.write(b"a")
    transport.writelines([b"b", b"c"])
    transport.write_eof()
    assert socket.writes == [b"ab", b"c", b"<eof>"]


async def test_abort_drops_what_is_held() -> None:
    transport, socket = coalescing()
    transport.write(b"never sent")
    transport.abort()
    await a_turn()
    assert socket.writes == []
    assert socket.aborted


async def test_what_is_held_for_a_client_gone_meanwhile_is_dropped() -> None:
    # asyncio's loop drops a write to a closed transport; uvloop raises from the loop's
    # callback instead, so the transport does not write once the socket is closing.
    transport, socket = coalescing()
    transport.write(b"head")
    socket.closed = True
    await a_turn()
    transport.write(b"head")
    transport.write(b"body")
    assert socket.writes == []


async def test_held_bytes_count_as_buffered_and_the_rest_is_the_sockets() -> None:
    transport, _ = coalescing()
    transport.write(b"12345")
    assert transport.get_write_buffer_size() == 5
    assert transport.get_extra_info("peername") == "extra:peername"


class CountingProtocol(HttpProtocol):
    """The server's protocol over a socket that counts the writes it is given."""

    writes: list[bytes] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        real_write = transport.write

        def counted(data: Any) -> None:
            CountingProtocol.writes.append(bytes(data))
            real_write(data)

        transport.write = counted  # type: ignore[method-assign]
        super().connection_made(transport)


async def answer(request: Request) -> Response:
    return JSONResponse({"answer": 42}, headers={"ETag": '"7"'})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    app = Starlette(routes=[Route("/answer", answer, methods=["GET", "HEAD"])])
    async with uvicorn_serving(app, http=CountingProtocol) as port:
        yield port


async def exchange(port: int, request: bytes, until: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        received = b""
        while until not in received:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk, f"the server closed after {received!r}"
            received += chunk
        return received
    finally:
        writer.close()


async def test_uvicorn_sends_a_response_in_one_write(server: int) -> None:
    CountingProtocol.writes.clear()
    received = await exchange(
        server, b"GET /answer HTTP/1.1\r\nHost: x\r\n\r\n", until=b'{"answer":42}'
    )
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'etag: "7"' in received
    # Without the coalescing transport uvicorn writes the head, then the body.
    assert len(CountingProtocol.writes) == 1
    assert CountingProtocol.writes[0] == received


async def test_a_head_answer_is_not_held_back(server: int) -> None:
    CountingProtocol.writes.clear()
    head = b"HEAD /answer HTTP/1.1\r\nHost: x\r\n\r\n"
    received = await exchange(server, head, until=b"\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"\r\n\r\n")
    assert len(CountingProtocol.writes) == 1
