"""Rebuild the read model from the event log: clear it, then apply every event again.

The replay reads the topics from offset 0 outside the live consumer's group (nothing is
committed, the live group keeps its offsets) and applies each event through the same
handlers and the same inbox group as the live consumer, so an event the live service
applies while the rebuild runs is applied once, by whichever comes first. Because the
read model does not depend on the order events arrive in, the rebuilt figures equal
the live ones.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.messaging.consumer import EventConsumer
from dealflow_common.messaging.replay import Progress, ReplaySummary, replay_from_beginning
from dealflow_common.settings import ServiceSettings
from dealflow_reporting.adapters.reports import clear_read_model
from dealflow_reporting.application.unit_of_work import ReportingUnitOfWork


async def rebuild_read_model(
    engine: AsyncEngine,
    consumer: EventConsumer[ReportingUnitOfWork],
    settings: ServiceSettings,
    topics: Iterable[str],
    progress: Progress | None = None,
) -> ReplaySummary:
    async with engine.begin() as connection:
        await clear_read_model(connection, consumer.group_id)
    return await replay_from_beginning(settings, topics, consumer.apply_batch, progress=progress)
