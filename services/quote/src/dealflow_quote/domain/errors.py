"""The quote service's business refusals, named for the rule they enforce."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from dealflow_common.contracts.quote import QuoteStatus
from dealflow_common.errors import (
    Conflict,
    NotFound,
    NotPermitted,
    RuleViolated,
    TransitionNotAllowed,
)
from dealflow_quote.domain.lifecycle import QuoteAction, allowed_actions


class QuoteNotFound(NotFound):
    def __init__(self, quote_id: UUID) -> None:
        super().__init__("quote", quote_id)


class ProductNotFound(NotFound):
    def __init__(self, product_id: UUID) -> None:
        super().__init__("product", product_id)


class BundleNotFound(NotFound):
    def __init__(self, bundle_id: UUID) -> None:
        super().__init__("bundle", bundle_id)


class QuoteActionNotAllowed(TransitionNotAllowed):
    def __init__(
        self,
        status: QuoteStatus,
        action: QuoteAction,
        why: str = "",
        allowed: Sequence[QuoteAction] | None = None,
    ) -> None:
        allowed = allowed_actions(status) if allowed is None else allowed
        super().__init__("quote", status.value, action.value, [a.value for a in allowed], why)


class ApprovalRequired(QuoteActionNotAllowed):
    def __init__(
        self, discount: Decimal, threshold: Decimal, allowed: Sequence[QuoteAction]
    ) -> None:
        super().__init__(
            QuoteStatus.DRAFT,
            QuoteAction.PRESENT,
            f"its discount of {discount}% is above the {threshold}% a rep may give; "
            "submit it for a manager's approval first",
            allowed,
        )


class ApprovalNotNeeded(QuoteActionNotAllowed):
    def __init__(
        self, discount: Decimal, threshold: Decimal, allowed: Sequence[QuoteAction]
    ) -> None:
        super().__init__(
            QuoteStatus.DRAFT,
            QuoteAction.SUBMIT_FOR_APPROVAL,
            f"its discount of {discount}% is within the {threshold}% a rep may give; present it",
            allowed,
        )


class SelfApproval(NotPermitted):
    def __init__(self, quote_id: UUID) -> None:
        super().__init__(f"the author of quote {quote_id} cannot approve its discount")


class QuoteHasExpired(QuoteActionNotAllowed):
    def __init__(self, valid_until: datetime) -> None:
        super().__init__(
            QuoteStatus.EXPIRED,
            QuoteAction.ACCEPT,
            f"it was valid until {valid_until.isoformat()}",
        )


class OpportunityUnknown(RuleViolated):
    def __init__(self, opportunity_id: UUID) -> None:
        super().__init__("opportunity_id", f"no open opportunity {opportunity_id} is known")


class OpportunityClosed(Conflict):
    def __init__(self, opportunity_id: UUID, stage: str) -> None:
        super().__init__(f"opportunity {opportunity_id} is {stage}: its quotes are closed too")


class CurrencyMismatch(RuleViolated):
    def __init__(self, field: str, given: str, quote_currency: str) -> None:
        super().__init__(field, f"{given} is not the quote's currency ({quote_currency})")


class ValidUntilInPast(RuleViolated):
    def __init__(self, valid_until: datetime) -> None:
        super().__init__("valid_until", f"{valid_until.isoformat()} is not in the future")


class CatalogItemRetired(RuleViolated):
    def __init__(self, field: str, what: str) -> None:
        super().__init__(field, f"{what} is retired and cannot be quoted")
