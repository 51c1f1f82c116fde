"""An order: what the customer bought when they accepted one quote, and its account.

Built from the accepted quote's lines as `quote.accepted` carries them, since no
service reads another's tables. One order per quote: the quote id is unique.

The account: `paid` is what the customer has paid net of refunds; the amount due is
the order's total until it is invoiced and the invoice's total (tax included) after;
`balance` is what is still owed. The status follows from them (`status_for`), except
`cancelled`, which only an order with nothing paid may become. What each status lets
one do is the table `ALLOWED`, read by the methods here and by the docs.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final
from uuid import UUID

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.order import (
    OrderCancelled,
    OrderCreated,
    OrderPaymentRecorded,
    OrderRefunded,
    OrderStatus,
)
from dealflow_common.contracts.quote import QuoteAccepted, QuoteLineData
from dealflow_common.errors import Conflict, NotFound, RuleViolated, TransitionNotAllowed


class OrderNotFound(NotFound):
    def __init__(self, order_id: UUID) -> None:
        super().__init__("order", order_id)


class OrderAction(StrEnum):
    RECORD_PAYMENT = "record_payment"
    REFUND = "refund"
    CANCEL = "cancel"
    ISSUE_INVOICE = "issue_invoice"


# A payment on a paid order, or a refund on an order with nothing paid, is allowed
# here and refused by the amount rules instead (422 naming the amount): the status is
# not what is wrong, the amount is.
ALLOWED: Final[Mapping[OrderStatus, frozenset[OrderAction]]] = {
    OrderStatus.OPEN: frozenset(OrderAction),
    OrderStatus.PARTIALLY_PAID: frozenset(
        {OrderAction.RECORD_PAYMENT, OrderAction.REFUND, OrderAction.ISSUE_INVOICE}
    ),
    OrderStatus.PAID: frozenset(
        {OrderAction.RECORD_PAYMENT, OrderAction.REFUND, OrderAction.ISSUE_INVOICE}
    ),
    OrderStatus.CANCELLED: frozenset(),
}

_WHY_NOT = {
    OrderStatus.PARTIALLY_PAID: "money was received for it; refund it first",
    OrderStatus.PAID: "money was received for it; refund it first",
    OrderStatus.CANCELLED: "the order was cancelled",
}


def status_for(paid: Decimal, due: Decimal) -> OrderStatus:
    """Open while nothing is paid, paid once the amount due is, partially paid between."""
    if paid <= 0:
        return OrderStatus.OPEN
    if paid >= due:
        return OrderStatus.PAID
    return OrderStatus.PARTIALLY_PAID


class EntryKind(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One money move on an order, with where it left the order's account."""

    id: UUID
    order_id: UUID
    kind: EntryKind
    amount: Money
    occurred_at: datetime
    """When the money was received (a payment) or given back (a refund)."""
    recorded_by: str
    recorded_at: datetime
    paid_after: Money
    balance_after: Money
    status_after: OrderStatus
    method: str | None = None
    reference: str | None = None
    reason: str | None = None


@dataclass(eq=False)
class Order:
    id: UUID
    opportunity_id: UUID
    quote_id: UUID
    status: OrderStatus
    lines: list[QuoteLineData]
    total: Money
    created_at: datetime
    version: int
    paid: Money
    invoice_id: UUID | None = None
    invoiced_total: Money | None = None
    cancelled_at: datetime | None = None
    cancelled_by: str | None = None
    cancel_reason: str | None = None
    events: list[EventPayload] = field(default_factory=list, repr=False)

    @classmethod
    def from_accepted_quote(cls, accepted: QuoteAccepted, now: datetime) -> Order:
        order = cls(
            id=uuid.uuid4(),
            opportunity_id=accepted.opportunity_id,
            quote_id=accepted.quote_id,
            status=OrderStatus.OPEN,
            lines=list(accepted.lines),
            total=accepted.total,
            created_at=now,
            version=1,
            paid=Money.zero(accepted.total.currency),
        )
        order.events.append(
            OrderCreated(
                opportunity_id=order.opportunity_id,
                order_id=order.id,
                quote_id=order.quote_id,
                total=order.total,
                lines=order.lines,
                created_at=now,
            )
        )
        return order

    @property
    def currency(self) -> str:
        return self.total.currency

    @property
    def amount_due(self) -> Money:
        """The order's total until invoiced; the invoice's total, tax included, after."""
        return self.invoiced_total or self.total

    @property
    def balance(self) -> Money:
        return self._money(self.amount_due.amount - self.paid.amount)

    def _money(self, amount: Decimal) -> Money:
        return Money(amount=amount, currency=self.currency)

    def _require(self, action: OrderAction) -> None:
        if action not in ALLOWED[self.status]:
            raise TransitionNotAllowed(
                "order",
                self.status.value,
                action.value,
                sorted(a.value for a in ALLOWED[self.status]),
                _WHY_NOT.get(self.status, ""),
            )

    def _require_amount(self, amount: Money) -> None:
        if amount.currency != self.currency:
            raise RuleViolated(
                "amount.currency",
                f"the order is in {self.currency}; {amount.currency} cannot be booked on it",
            )
        if amount.amount <= 0:
            raise RuleViolated("amount.amount", "must be more than zero")

    def record_payment(
        self,
        amount: Money,
        *,
        method: str,
        reference: str | None,
        received_at: datetime,
        by: str,
        now: datetime,
    ) -> LedgerEntry:
        self._require(OrderAction.RECORD_PAYMENT)
        self._require_amount(amount)
        if amount.amount > self.balance.amount:
            raise RuleViolated(
                "amount.amount",
                f"{amount.amount} {self.currency} is more than the balance of "
                f"{self.balance.amount} {self.currency}: an overpayment",
            )
        entry = self._book(
            EntryKind.PAYMENT, amount, received_at, by, now, method=method, reference=reference
        )
        self.events.append(
            OrderPaymentRecorded(
                opportunity_id=self.opportunity_id,
                order_id=self.id,
                payment_id=entry.id,
                amount=amount,
                method=method,
                reference=reference,
                received_at=received_at,
                recorded_by=by,
                paid=self.paid,
                balance=self.balance,
                status=self.status,
            )
        )
        return entry

    def refund(self, amount: Money, *, reason: str, by: str, now: datetime) -> LedgerEntry:
        self._require(OrderAction.REFUND)
        self._require_amount(amount)
        if amount.amount > self.paid.amount:
            raise RuleViolated(
                "amount.amount",
                f"{amount.amount} {self.currency} is more than was paid "
                f"({self.paid.amount} {self.currency})",
            )
        entry = self._book(EntryKind.REFUND, amount, now, by, now, reason=reason)
        self.events.append(
            OrderRefunded(
                opportunity_id=self.opportunity_id,
                order_id=self.id,
                refund_id=entry.id,
                amount=amount,
                reason=reason,
                refunded_by=by,
                refunded_at=now,
                paid=self.paid,
                balance=self.balance,
                status=self.status,
            )
        )
        return entry

    def _book(
        self,
        kind: EntryKind,
        amount: Money,
        occurred_at: datetime,
        by: str,
        now: datetime,
        *,
        method: str | None = None,
        reference: str | None = None,
        reason: str | None = None,
    ) -> LedgerEntry:
        signed = amount.amount if kind is EntryKind.PAYMENT else -amount.amount
        self.paid = self._money(self.paid.amount + signed)
        self.status = status_for(self.paid.amount, self.amount_due.amount)
        self.version += 1
        return LedgerEntry(
            id=uuid.uuid4(),
            order_id=self.id,
            kind=kind,
            amount=amount,
            occurred_at=occurred_at,
            recorded_by=by,
            recorded_at=now,
            paid_after=self.paid,
            balance_after=self.balance,
            status_after=self.status,
            method=method,
            reference=reference,
            reason=reason,
        )

    def cancel(self, reason: str, *, by: str, now: datetime) -> None:
        self._require(OrderAction.CANCEL)  # only OPEN may: nothing is paid then
        self.status = OrderStatus.CANCELLED
        self.version += 1
        self.cancelled_at, self.cancelled_by, self.cancel_reason = now, by, reason
        self.events.append(
            OrderCancelled(
                opportunity_id=self.opportunity_id,
                order_id=self.id,
                reason=reason,
                cancelled_by=by,
                cancelled_at=now,
            )
        )

    def require_invoiceable(self) -> None:
        self._require(OrderAction.ISSUE_INVOICE)
        if self.invoice_id is not None:
            raise Conflict(f"order {self.id} is already invoiced (invoice {self.invoice_id})")

    def invoiced(self, invoice_id: UUID, total: Money) -> None:
        """The invoice's total is what is due from now on (tax included)."""
        self.invoice_id, self.invoiced_total = invoice_id, total
        self.status = status_for(self.paid.amount, self.amount_due.amount)
        self.version += 1


def actions_table() -> str:
    """`ALLOWED` as a Markdown table (status x action), for docs/state-machine.md."""
    actions = list(OrderAction)
    rows = [
        "| status | " + " | ".join(a.value for a in actions) + " |",
        "|---|" + "---|" * len(actions),
    ]
    for status, allowed in ALLOWED.items():
        marks = " | ".join("yes" if a in allowed else "-" for a in actions)
        rows.append(f"| {status.value} | {marks} |")
    return "\n".join(rows) + "\n"
