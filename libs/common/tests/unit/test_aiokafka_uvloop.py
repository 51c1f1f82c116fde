"""aiokafka on uvloop: a write to a connection the broker closed is a broken connection,
on a real uvloop loop and a real loopback socket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import uvloop
from aiokafka import errors
from aiokafka.conn import AIOKafkaConnection
from aiokafka.protocol.admin import ApiVersionRequest

from dealflow_common.messaging.aiokafka_uvloop import tolerate_closed_connections


async def _send_on_a_closed_connection(
    send: Callable[..., Any],
) -> tuple[AIOKafkaConnection, BaseException | None]:
    """A connection whose broker closed it and whose transport is closed, then `send`."""
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = AIOKafkaConnection("127.0.0.1", port)
    reader = asyncio.StreamReader()
    transport, protocol = await loop.create_connection(
        lambda: asyncio.StreamReaderProtocol(reader), "127.0.0.1", port
    )
    connection._writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    await reader.read()  # the broker's side closed it
    transport.close()
    await asyncio.sleep(0.01)
    server.close()
    try:
        pending = send(connection, ApiVersionRequest())
    except BaseException as error:
        return connection, error
    pending.close()  # not awaited: only whether the write raised matters here
    return connection, None


def test_unpatched_uvloop_raises_what_aiokafka_does_not_catch() -> None:
    """What the patch is for: if uvloop or aiokafka change, this says so."""
    unpatched = getattr(AIOKafkaConnection.send, "__wrapped__", AIOKafkaConnection.send)
    _, error = uvloop.run(_send_on_a_closed_connection(unpatched))
    assert isinstance(error, RuntimeError)
    assert "closed" in str(error)


def test_a_send_on_a_closed_connection_is_a_broken_connection() -> None:
    tolerate_closed_connections()
    tolerate_closed_connections()  # idempotent: wrapped once
    connection, error = uvloop.run(_send_on_a_closed_connection(AIOKafkaConnection.send))
    assert isinstance(error, errors.KafkaConnectionError)
    assert "broken" in str(error)
    assert not connection.connected()


async def test_other_runtime_errors_are_not_hidden() -> None:
    tolerate_closed_connections()
    connection = AIOKafkaConnection("127.0.0.1", 1)

    class OpenTransport:
        def is_closing(self) -> bool:
            return False

    class Writer:
        transport = OpenTransport()

        def write(self, _: bytes) -> None:
            raise RuntimeError("something else")

    connection._writer = Writer()  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="something else"):
        connection.send(ApiVersionRequest())
