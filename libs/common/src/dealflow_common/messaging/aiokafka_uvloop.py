"""aiokafka on uvloop: a write to a connection the broker closed is a broken connection.

asyncio's own loop drops a write to a closed transport (it logs a warning), and
aiokafka then learns of the loss from its reader. uvloop raises `RuntimeError` instead
("the handler is closed"), which aiokafka's `AIOKafkaConnection.send` does not catch (it
catches `OSError`): the exception escapes into the producer's sender or the consumer's
coordinator and ends that routine for good (aio-libs/aiokafka#1038; seen here under
`make chaos`, whose proxy resets connections). The services run on uvloop (its loop
costs about 5 % less CPU per deal, docs/performance.md), so `tolerate_closed_connections`
makes aiokafka treat that error as it treats an `OSError` there: the connection is
closed as broken and the caller gets `KafkaConnectionError`, which it retries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aiokafka import errors
from aiokafka.conn import AIOKafkaConnection, CloseReason

_GUARDED = "_dealflow_tolerates_closed_connections"


def tolerate_closed_connections() -> None:
    """Patch aiokafka's connection writes once per process (idempotent)."""
    if getattr(AIOKafkaConnection, _GUARDED, False):
        return
    for name in ("send", "_send_sasl_token"):
        setattr(AIOKafkaConnection, name, _broken_when_closed(getattr(AIOKafkaConnection, name)))
    setattr(AIOKafkaConnection, _GUARDED, True)


def _broken_when_closed(write: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(write)
    def guarded(self: AIOKafkaConnection, *args: Any, **kwargs: Any) -> Any:
        writer = self._writer
        try:
            return write(self, *args, **kwargs)
        except RuntimeError as error:
            # Only the closed transport's error: any other RuntimeError is not ours to hide.
            if writer is None or not writer.transport.is_closing():
                raise
            self.close(reason=CloseReason.CONNECTION_BROKEN)
            raise errors.KafkaConnectionError(
                f"Connection at {self.host}:{self.port} broken: {error}"
            ) from error

    return guarded
