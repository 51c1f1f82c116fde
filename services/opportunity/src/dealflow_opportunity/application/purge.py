"""The opportunity service's part of a purge (DESIGN.md section 6).

It counts each deal's quotes from the quote events (`quote.created` adds one,
`quote.purged` takes it away), and on `opportunity.purge_requested` it purges the deal
only when it is closed and none of its quotes is left: the deal with its owners,
notes, sales history and assignments is archived, deleted, and `opportunity.purged`
is recorded. Otherwise it refuses by doing nothing; the agent's request times out and
is retried with backoff (quote events that were still on their way have arrived by
then). A request for a deal already purged answers `opportunity.purged` again from the
archive, so an agent that missed the first answer learns it; nothing is purged twice.
"""

from __future__ import annotations

import logging
from typing import Any

from dealflow_common.contracts.opportunity import (
    OpportunityPurged,
    OpportunityPurgeRequested,
    Stage,
)
from dealflow_common.contracts.quote import QuoteCreated, QuotePurged
from dealflow_common.messaging.consumer import EventHandler, IncomingEvent
from dealflow_opportunity.adapters.archive import OpportunityArchive
from dealflow_opportunity.application.unit_of_work import OpportunityUnitOfWork
from dealflow_opportunity.domain.stages import CLOSED_STAGES

log = logging.getLogger(__name__)


async def quote_created(uow: OpportunityUnitOfWork, event: IncomingEvent[Any]) -> None:
    created: QuoteCreated = event.payload
    await OpportunityArchive(uow.connection).quote_created(created.quote_id, created.opportunity_id)


async def quote_purged(uow: OpportunityUnitOfWork, event: IncomingEvent[Any]) -> None:
    purged: QuotePurged = event.payload
    await OpportunityArchive(uow.connection).quote_purged(
        purged.quote_id, purged.opportunity_id, purged.purged_at
    )


async def purge_opportunity(uow: OpportunityUnitOfWork, event: IncomingEvent[Any]) -> None:
    request: OpportunityPurgeRequested = event.payload
    archive = OpportunityArchive(uow.connection)
    row = await archive.locked_row(request.opportunity_id)
    if row is None:
        archived = await archive.archived(request.opportunity_id)
        if archived is not None:
            uow.record(
                OpportunityPurged(
                    opportunity_id=request.opportunity_id,
                    run_id=archived.run_id,
                    stage=Stage(archived.stage),
                    closed_at=archived.closed_at,
                    purged_at=archived.purged_at,
                )
            )
        else:
            log.warning("purge of unknown opportunity %s refused", request.opportunity_id)
        return
    if Stage(row.stage) not in CLOSED_STAGES:
        log.warning("purge of opportunity %s refused: it is %s", row.id, row.stage)
        return
    live = await archive.live_quotes(row.id)
    if live:
        log.warning("purge of opportunity %s refused: %d quotes of it are left", row.id, live)
        return
    now = uow.clock()
    await archive.archive_and_delete(row, request.run_id, request.policy, now)
    uow.record(
        OpportunityPurged(
            opportunity_id=row.id,
            run_id=request.run_id,
            stage=Stage(row.stage),
            closed_at=row.closed_at,
            purged_at=now,
        )
    )


QUOTE_HANDLERS: dict[str, EventHandler] = {
    "quote.created": quote_created,
    "quote.purged": quote_purged,
}
COMMAND_HANDLERS: dict[str, EventHandler] = {"opportunity.purge_requested": purge_opportunity}
