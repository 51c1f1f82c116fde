"""The load client's HTTP: JSON requests over kept-alive HTTP/1.1 connections.

The load client shares the machine with what it measures, so its own CPU per deal counts
against the system's (issue 13 counts it). aiohttp spent about 210 µs of the client's CPU
per call here, with 32 clients on one loop; this client about 38 µs for the same calls:
the request is one preformatted write, the answer is parsed by httptools (the parser
the services' uvicorn uses) and decoded by orjson. It does only what the bench needs: one
request at a time per connection, a body of JSON or none, and an answer read whole.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson

IDLE_REUSE_SECONDS = 2.0
"""An idle connection older than this is closed rather than reused: the services' server
closes a connection idle for 5 s (uvicorn's default), and a request written just as it
does would be lost with it."""


class _Exchange(asyncio.Protocol):
    """One connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.open = True
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A socket's transport (uvloop's is not a subclass of asyncio's classes).
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(exc or ConnectionError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(error)
            self.close()

    def on_body(self, body: bytes) -> None:  # httptools calls it with each part of the body
        self._body.append(body)

    def on_message_complete(self) -> None:  # and this at the answer's end
        if not self._parser.should_keep_alive():
            self.open = False
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((self._parser.get_status_code(), b"".join(self._body)))

    def _fail(self, error: BaseException) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    async def exchange(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        self._body = []
        answer: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._answer = answer
        expiry = loop.call_later(timeout, self._fail, TimeoutError(f"no answer within {timeout} s"))
        self._transport.write(request)
        try:
            return await answer
        finally:
            expiry.cancel()

    def close(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.close()


class JsonClient:
    """Requests to the services' origins (`http://host:port`), each origin's connections
    kept open between requests; as many connections as requests in flight."""

    def __init__(self, headers: dict[str, str], timeout: float = 60.0) -> None:
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._timeout = timeout
        self._idle: dict[str, list[_Exchange]] = {}
        self._hosts: dict[str, tuple[str, int, str]] = {}

    async def request(
        self, method: str, origin: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        """The answer's status and its JSON (None when it has no body)."""
        exchange = await self._connection(origin)
        payload = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._hosts[origin][2]}\r\n{self._headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        try:
            status, raw = await exchange.exchange(head.encode() + payload, self._timeout)
        except BaseException:
            exchange.close()  # an answer half read leaves the connection unusable
            raise
        if exchange.open:
            exchange.idle_since = asyncio.get_running_loop().time()
            self._idle[origin].append(exchange)
        else:
            exchange.close()
        return status, orjson.loads(raw) if raw else None

    async def _connection(self, origin: str) -> _Exchange:
        loop = asyncio.get_running_loop()
        idle = self._idle.setdefault(origin, [])
        while idle:
            exchange = idle.pop()
            if exchange.open and loop.time() - exchange.idle_since < IDLE_REUSE_SECONDS:
                return exchange
            exchange.close()
        if origin not in self._hosts:
            parts = urlsplit(origin)
            if parts.scheme != "http" or parts.hostname is None or parts.port is None:
                raise ValueError(f"not an http://host:port origin: {origin!r}")
            self._hosts[origin] = (parts.hostname, parts.port, parts.netloc)
        host, port, _ = self._hosts[origin]
        _, exchange = await loop.create_connection(_Exchange, host, port)
        return exchange

    async def __aenter__(self) -> JsonClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        for idle in self._idle.values():
            for exchange in idle:
                exchange.close()
        self._idle.clear()
