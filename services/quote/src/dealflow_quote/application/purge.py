"""The quote service's part of a purge (DESIGN.md section 6), on `quote.purge_requested`.

The deal is marked `purge_pending` in this service's projection first, so no quote is
created or accepted for it from then on (both need an open deal). That mark is the
quote service's own fact, not an opportunity event: it carries no sequence, and the
projection never takes a deal out of purge for a later event (`KnownOpportunity`).
Then every quote of it is archived with its lines and deleted, `quote.purged` is
recorded for each and `quote.purge_completed` last, all in the one transaction. A
request delivered again finds nothing left and answers with a count of 0: nothing is
purged twice.
"""

from __future__ import annotations

from typing import Any

from dealflow_common.contracts.quote import (
    QuotePurgeCompleted,
    QuotePurged,
    QuotePurgeRequested,
    QuoteStatus,
)
from dealflow_common.messaging.consumer import EventHandler, IncomingEvent
from dealflow_quote.adapters.archive import QuoteArchive
from dealflow_quote.application.unit_of_work import QuoteUnitOfWork
from dealflow_quote.domain.access import KnownOpportunity


async def purge_quotes(uow: QuoteUnitOfWork, event: IncomingEvent[Any]) -> None:
    request: QuotePurgeRequested = event.payload
    now = uow.clock()
    # Locked like an opportunity event's update of the row, so neither undoes the other.
    deal = await uow.opportunities.lock_or_add(KnownOpportunity.unseen(request.opportunity_id), now)
    deal.mark_purge_pending()
    await uow.opportunities.save(deal, now)
    purged = await QuoteArchive(uow.connection).purge_quotes_of(
        request.opportunity_id, request.run_id, request.policy, now
    )
    uow.record(
        *(
            QuotePurged(
                opportunity_id=request.opportunity_id,
                quote_id=quote_id,
                run_id=request.run_id,
                previous_status=QuoteStatus(status),
                purged_at=now,
            )
            for quote_id, status in purged
        ),
        QuotePurgeCompleted(
            opportunity_id=request.opportunity_id,
            run_id=request.run_id,
            count=len(purged),
            remaining=0,
            completed_at=now,
        ),
    )


HANDLERS: dict[str, EventHandler] = {"quote.purge_requested": purge_quotes}
