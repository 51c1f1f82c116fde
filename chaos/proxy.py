"""A small TCP proxy on asyncio that puts faults between the services and the broker.

Tansu advertises the proxy's port in its metadata, so every Kafka connection (the
services', the load client's, the checker's) goes through here. Modes, switched at any
time and applied to open connections as well as new ones:

- pass: bytes flow both ways as they come;
- latency: every chunk is delivered `delay` seconds after it was read, in order;
- blackhole: connections are accepted but nothing is forwarded (bytes wait, as behind
  a network partition that later heals: TCP would retransmit them);
- reset: every open connection is closed with a TCP RST, and so is every new one.

`python -m chaos.proxy` runs a self-check of each mode against a local echo server.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

CHUNK = 64 * 1024


class Mode(enum.Enum):
    PASS = "pass"
    LATENCY = "latency"
    BLACKHOLE = "blackhole"
    RESET = "reset"


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: SO_LINGER on, timeout 0, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen = listen
        self.target = target
        self.mode = Mode.PASS
        self.delay = 0.0
        self.connections_accepted = 0
        self.connections_reset = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._open: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one asked for, or the one given for port 0)."""
        if self._server is not None:
            return int(self._server.sockets[0].getsockname()[1])
        return self.listen[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, *self.listen)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._open):
            self._close(connection, reset=False)
        for connection in list(self._open):
            for task in connection.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._open.clear()

    # Modes --------------------------------------------------------------------------

    def pass_through(self) -> None:
        self.mode, self.delay = Mode.PASS, 0.0
        self._flowing.set()

    def add_latency(self, delay: float) -> None:
        self.mode, self.delay = Mode.LATENCY, delay
        self._flowing.set()

    def blackhole(self) -> None:
        self.mode = Mode.BLACKHOLE
        self._flowing.clear()

    def reset(self) -> int:
        """Reset every open connection, and every new one until the mode changes."""
        self.mode = Mode.RESET
        self._flowing.set()
        resets = 0
        for connection in list(self._open):
            self._close(connection, reset=True)
            resets += 1
        return resets

    # Forwarding ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        connection = _Connection(writer)
        if self.mode is Mode.RESET:
            self.connections_reset += 1
            _reset(writer)
            return
        self._open.add(connection)
        try:
            await self._flowing.wait()  # a blackhole accepts, then forwards nothing
            if self.mode is Mode.RESET or connection not in self._open:
                self._close(connection, reset=True)
                return
            up_reader, connection.upstream = await asyncio.open_connection(*self.target)
            connection.tasks = [
                asyncio.create_task(self._pump(reader, connection.upstream)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            # When one direction ends, the connection is over.
            await asyncio.wait(connection.tasks, return_when=asyncio.FIRST_COMPLETED)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._close(connection, reset=False)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction; chunks keep their order whatever the delay."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._deliver(queue, writer))
        try:
            while not sender.done():
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                queue.put_nowait((time.monotonic() + self.delay, data))
            queue.put_nowait((0.0, b""))
            await sender
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            sender.cancel()

    async def _deliver(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._flowing.wait()
            writer.write(data)
            await writer.drain()

    def _close(self, connection: _Connection, *, reset: bool) -> None:
        if connection not in self._open:
            return
        self._open.discard(connection)
        for task in connection.tasks:
            task.cancel()
        for writer in (connection.client, connection.upstream):
            if writer is None:
                continue
            if reset:
                _reset(writer)
            else:
                writer.close()
        if reset:
            self.connections_reset += 1


# Self-check ---------------------------------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _round_trip(port: int, payload: bytes, timeout: float) -> tuple[bytes, float]:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
        return got, time.monotonic() - started
    finally:
        writer.close()


async def self_check() -> None:
    """Each mode against a local echo server; raises AssertionError on a failure."""
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    echo_port = echo.sockets[0].getsockname()[1]
    proxy = TcpProxy(("127.0.0.1", 0), ("127.0.0.1", echo_port))
    await proxy.start()
    port = proxy.port
    try:
        got, _ = await _round_trip(port, b"hello" * 1000, 2)
        assert got == b"hello" * 1000, "pass: the echo came back different"

        proxy.add_latency(0.2)
        got, took = await _round_trip(port, b"slow", 3)
        assert got == b"slow", "latency: the echo came back different"
        assert took >= 0.4, f"latency: the round trip took {took:.2f}s"

        proxy.blackhole()
        waiting = asyncio.create_task(_round_trip(port, b"held", 5))
        await asyncio.sleep(0.5)
        assert not waiting.done(), "blackhole: bytes went through"
        proxy.pass_through()
        got, _ = await waiting
        assert got == b"held", "blackhole: held bytes were not delivered after it healed"

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x")
        await reader.readexactly(1)
        assert proxy.reset() == 1, "reset: the open connection was not reset"
        try:
            writer.write(b"y")
            await writer.drain()
            await asyncio.wait_for(reader.readexactly(1), 2)
            raise AssertionError("reset: the open connection still answers")
        except (ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError):
            pass
        writer.close()
        try:
            await _round_trip(port, b"z", 2)
            raise AssertionError("reset: a new connection was served")
        except (ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError):
            pass
        proxy.pass_through()
        got, _ = await _round_trip(port, b"again", 2)
        assert got == b"again", "pass after reset: no echo"
    finally:
        await proxy.stop()
        echo.close()


def main() -> int:
    try:
        asyncio.run(asyncio.wait_for(self_check(), 30))
    except AssertionError as failure:
        print(f"proxy self-check FAILED: {failure}", file=sys.stderr)
        return 1
    print("proxy self-check passed: pass, latency, blackhole, reset")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
