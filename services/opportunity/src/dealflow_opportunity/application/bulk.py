"""Bulk work: one change applied to many deals, each under its own rules.

Every deal is changed by its own use case in its own transaction, with its own events,
exactly as if the caller had asked for it alone: one deal refused (the state machine,
the access rule) neither stops nor undoes the others, and the answer tells per deal
what happened. What is refused before any deal is touched: a request for more deals
than the maximum, whether listed or matched by a filter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from dealflow_common.auth import Principal
from dealflow_common.errors import DomainError, NotFound, RuleViolated
from dealflow_opportunity.adapters.repository import OpportunityFilter
from dealflow_opportunity.application.queries import OpportunityReader
from dealflow_opportunity.domain.model import Opportunity


class TooManyDeals(RuleViolated):
    def __init__(self, field: str, maximum: int, what: str) -> None:
        super().__init__(field, f"{what}; a bulk request changes at most {maximum} deals, split it")


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    opportunity_id: UUID
    opportunity: Opportunity | None = None
    refusal: DomainError | None = None

    @property
    def outcome(self) -> Literal["changed", "unchanged", "refused", "not_found"]:
        if self.opportunity is not None:
            # Accepted but already so (an owner assigned again): no new version, no event.
            return "changed" if self.opportunity.version_bumped else "unchanged"
        # A deal the caller may not see is answered as an unknown one, as everywhere.
        return "not_found" if isinstance(self.refusal, NotFound) else "refused"


async def deals_to_change(
    reader: OpportunityReader,
    principal: Principal,
    ids: Sequence[UUID] | None,
    where: OpportunityFilter | None,
    maximum: int,
) -> list[UUID]:
    """The listed deals (each once, in the order given), or those the filter matches
    among the deals the caller may see, newest first."""
    if ids is not None:
        unique = list(dict.fromkeys(ids))
        if len(unique) > maximum:
            raise TooManyDeals("ids", maximum, f"{len(unique)} deals listed")
        return unique
    assert where is not None
    matched = await reader.page(principal, where, None, maximum + 1)
    if len(matched) > maximum:
        raise TooManyDeals("filter", maximum, f"the filter matches more than {maximum} deals")
    return [o.id for o in matched]


async def change_each(
    ids: Sequence[UUID], change: Callable[[UUID], Awaitable[Opportunity]]
) -> list[BulkOutcome]:
    """Apply `change` to each deal in turn, one transaction each."""
    outcomes = []
    for opportunity_id in ids:
        try:
            outcomes.append(BulkOutcome(opportunity_id, opportunity=await change(opportunity_id)))
        except DomainError as refusal:
            outcomes.append(BulkOutcome(opportunity_id, refusal=refusal))
    return outcomes
