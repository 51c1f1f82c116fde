"""The opportunity service's part of a purge (DESIGN.md section 6).

It counts each deal's quotes from the quote events (`quote.created` adds one,
`quote.purged` takes it away), and on `opportunity.purge_requested` it purges the deal
only when it is closed and none of its quotes is left: the deal with its owners,
notes, sales history and assignments is archived, deleted, and `opportunity.purged`
is recorded.

The command and the quote events travel on different topics, so the request often
arrives before the last `quote.purged` the quote service sent just before it. Such a
request is kept (`purge_requests`) and completed by that last `quote.purged`, rather
than refused and left to the agent's timeout. A request for a deal that is open, or
unknown, is refused (logged; the agent's own timeout and backoff report it). Both
handlers lock the deal's row first, so a request and the last quote.purged cannot miss
each other. A request for a deal already purged answers `opportunity.purged` again
from the archive, so an agent that missed the first answer learns it; nothing is
purged twice.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from dealflow_common.contracts.opportunity import (
    OpportunityPurged,
    OpportunityPurgeRequested,
    Stage,
)
from dealflow_common.contracts.purge import PurgePolicySnapshot
from dealflow_common.contracts.quote import QuoteCreated, QuotePurged
from dealflow_common.messaging.consumer import EventHandler, IncomingEvent
from dealflow_opportunity.adapters.archive import OpportunityArchive
from dealflow_opportunity.application.unit_of_work import OpportunityUnitOfWork
from dealflow_opportunity.domain.stages import CLOSED_STAGES

log = logging.getLogger(__name__)


async def quote_created(uow: OpportunityUnitOfWork, event: IncomingEvent[Any]) -> None:
    created: QuoteCreated = event.payload
    uow.archive.quote_created(created.quote_id, created.opportunity_id)


async def quote_purged(uow: OpportunityUnitOfWork, event: IncomingEvent[Any]) -> None:
    purged: QuotePurged = event.payload
    archive = uow.archive
    row = await archive.locked_row(purged.opportunity_id)
    await archive.quote_purged(purged.quote_id, purged.opportunity_id, purged.purged_at)
    if row is None:
        return
    waiting = await archive.waiting_request(row.id)
    if waiting is not None and not await archive.live_quotes(row.id):
        await _purge(
            uow,
            archive,
            row,
            waiting.run_id,
            PurgePolicySnapshot.model_validate(waiting.policy),
        )


async def purge_opportunity(uow: OpportunityUnitOfWork, event: IncomingEvent[Any]) -> None:
    request: OpportunityPurgeRequested = event.payload
    archive = uow.archive
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
        log.info("purge of opportunity %s waits for %d quotes to be purged", row.id, live)
        await archive.wait_for_quotes(row.id, request.run_id, request.policy, uow.clock())
        return
    await _purge(uow, archive, row, request.run_id, request.policy)


async def _purge(
    uow: OpportunityUnitOfWork,
    archive: OpportunityArchive,
    row: Any,
    run_id: UUID,
    policy: PurgePolicySnapshot,
) -> None:
    now = uow.clock()
    await archive.archive_and_delete(row, run_id, policy, now)
    uow.record(
        OpportunityPurged(
            opportunity_id=row.id,
            run_id=run_id,
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
