"""What must still hold after `make bench`, with one replica of each service or several.

Read from outside once the system has settled: the services' tables in `dealflow_bench`
(their schemas), their /metrics, and the broker's offsets. Per completed deal: the
opportunity is closed_won once (one stage move, one `opportunity.won`) with the accepted
quote, has exactly one order and records it; the accepted quote is accepted (one
`quote.accepted`), the other abandoned; one `order.created`. Globally: no outbox row
unsent, nothing on a dead-letter topic, and every consumer group committed up to the end
of every partition it reads.

Counting the events in the outboxes is what shows a replica applying an event twice:
the inbox (primary key consumer group + event id) makes a second apply impossible, so
the report gives how many re-deliveries it skipped rather than checking the key.

`violations` is pure: it judges what `observe` read.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from dealflow_common.contracts.topics import ALL_TOPICS, dead_letter_topic

# The events each completed deal causes exactly once, by the schema whose outbox holds them.
ONCE_PER_DEAL = {
    "opportunity": ("opportunity.won",),
    "quote": ("quote.accepted",),
    "order": ("order.created",),
}
SHOWN = 20
"""Violations listed in the report; the count says how many there were."""


@dataclass(frozen=True)
class CompletedDeal:
    """A deal the driver saw through to its order: its opportunity and its quotes."""

    opportunity_id: str
    accepted_quote: str
    abandoned_quotes: tuple[str, ...]


@dataclass(frozen=True)
class Opportunity:
    stage: str
    won_quote_id: str | None
    order_id: str | None


@dataclass(frozen=True)
class Order:
    order_id: str
    quote_id: str


@dataclass
class Observed:
    """What the database, the services' /metrics and the broker showed after the run."""

    opportunities: dict[str, Opportunity] = field(default_factory=dict)
    closed_won_moves: Counter[str] = field(default_factory=Counter)
    """Sales history rows into closed_won, per opportunity."""
    quote_status: dict[str, str] = field(default_factory=dict)
    orders: dict[str, list[Order]] = field(default_factory=dict)
    """By opportunity."""
    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(opportunity, event type) -> rows in the outboxes."""
    unsent: dict[str, int] = field(default_factory=dict)
    """Schema -> outbox rows not yet published."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    """Dead-letter topic -> records on it."""
    lag: dict[str, int] = field(default_factory=dict)
    """Consumer group -> records between its committed offsets and the partitions' ends."""
    reported_lag: dict[str, float] = field(default_factory=dict)
    """Consumer group -> the lag its members report (dealflow_consumer_lag, summed)."""
    duplicates_skipped: int = 0
    """Re-delivered events the inboxes skipped (dealflow_events_consumed, duplicate)."""


def violations(deals: Iterable[CompletedDeal], seen: Observed) -> list[str]:
    """Every way the run broke an invariant, one line each (empty: all hold)."""
    found: list[str] = []
    for deal in deals:
        name = f"deal {deal.opportunity_id}"
        opportunity = seen.opportunities.get(deal.opportunity_id)
        if opportunity is None:
            found.append(f"{name}: no opportunity row")
            continue
        if opportunity.stage != "closed_won":
            found.append(f"{name}: {opportunity.stage}, not closed_won")
        if opportunity.won_quote_id != deal.accepted_quote:
            found.append(
                f"{name}: won with quote {opportunity.won_quote_id}, not {deal.accepted_quote}"
            )
        moves = seen.closed_won_moves[deal.opportunity_id]
        if moves != 1:
            found.append(f"{name}: moved to closed_won {moves} times")
        orders = seen.orders.get(deal.opportunity_id, [])
        if len(orders) != 1:
            found.append(f"{name}: {len(orders)} orders")
        elif orders[0].quote_id != deal.accepted_quote:
            found.append(f"{name}: its order is for quote {orders[0].quote_id}")
        elif opportunity.order_id != orders[0].order_id:
            found.append(f"{name}: records order {opportunity.order_id}, not {orders[0].order_id}")
        accepted = seen.quote_status.get(deal.accepted_quote)
        if accepted != "accepted":
            found.append(f"{name}: accepted quote {deal.accepted_quote} is {accepted}")
        for quote in deal.abandoned_quotes:
            status = seen.quote_status.get(quote)
            if status != "abandoned":
                found.append(f"{name}: quote {quote} is {status}, not abandoned")
        for types in ONCE_PER_DEAL.values():
            for event_type in types:
                count = seen.events[(deal.opportunity_id, event_type)]
                if count != 1:
                    found.append(f"{name}: {count} {event_type} events")
    found += [f"{schema}: {n} outbox rows unsent" for schema, n in seen.unsent.items() if n]
    found += [f"{topic}: {n} dead letters" for topic, n in seen.dead_letters.items() if n]
    found += [f"consumer group {group}: {n} behind" for group, n in seen.lag.items() if n]
    found += [
        f"consumer group {group}: its members report {n:g} behind"
        for group, n in seen.reported_lag.items()
        if n
    ]
    return found


def committed_lag(
    committed: Mapping[TopicPartition, int | None], ends: Mapping[TopicPartition, int]
) -> int:
    """Records between a group's committed offsets and the ends of the topics it reads.

    A topic counts as read by the group when it committed on any of its partitions (the
    broker does not tell a group's subscriptions); there, a partition with records and
    no commit is behind by all of them.
    """
    read = {tp.topic for tp, offset in committed.items() if offset is not None}
    return sum(
        max(0, end - (committed.get(tp) or 0)) for tp, end in ends.items() if tp.topic in read
    )


def labelled(text: str, family: str, label: str) -> dict[str, float]:
    """Each value of `label` in a Prometheus text exposition -> its samples of `family`
    (a counter's `_total` samples), summed."""
    return {key: value for (key,), value in labelled_by(text, family, label).items()}


def labelled_by(text: str, family: str, *labels: str) -> dict[tuple[str, ...], float]:
    """`labelled` for several labels: each combination of their values -> the sum."""
    found: dict[tuple[str, ...], float] = {}
    for metric in text_string_to_metric_families(text):
        if metric.name != family:
            continue
        for sample in metric.samples:
            if sample.name not in (family, f"{family}_total") or not all(
                label in sample.labels for label in labels
            ):
                continue
            key = tuple(sample.labels[label] for label in labels)
            found[key] = found.get(key, 0.0) + sample.value
    return found


def from_metrics(expositions: Iterable[str], seen: Observed) -> None:
    """The members' own lag and skipped duplicates, summed over every replica."""
    seen.reported_lag, seen.duplicates_skipped = {}, 0
    for text in expositions:
        for group, lag in labelled(text, "dealflow_consumer_lag", "group").items():
            seen.reported_lag[group] = seen.reported_lag.get(group, 0.0) + lag
        seen.duplicates_skipped += int(
            labelled(text, "dealflow_events_consumed", "outcome").get("duplicate", 0.0)
        )


async def outbox_schemas(db: asyncpg.Connection) -> list[str]:
    rows = await db.fetch(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox' "
        "ORDER BY table_schema"
    )
    return [str(r["table_schema"]) for r in rows]


async def unsent(db: asyncpg.Connection, schemas: Iterable[str]) -> dict[str, int]:
    return {
        schema: int(
            await db.fetchval(f'SELECT count(*) FROM "{schema}".outbox WHERE sent_at IS NULL')
        )
        for schema in schemas
    }


async def from_database(db: asyncpg.Connection, deals: list[CompletedDeal], seen: Observed) -> None:
    ids = [uuid.UUID(d.opportunity_id) for d in deals]
    subjects = [d.opportunity_id for d in deals]
    seen.opportunities = {
        r["id"]: Opportunity(r["stage"], r["won"], r["order_id"])
        for r in await db.fetch(
            "SELECT id::text AS id, stage, won_quote_id::text AS won, order_id::text AS order_id "
            "FROM opportunity.opportunities WHERE id = ANY($1::uuid[])",
            ids,
        )
    }
    seen.closed_won_moves = Counter(
        {
            r["id"]: r["n"]
            for r in await db.fetch(
                "SELECT opportunity_id::text AS id, count(*) AS n FROM opportunity.sales_history "
                "WHERE opportunity_id = ANY($1::uuid[]) AND to_stage = 'closed_won' GROUP BY 1",
                ids,
            )
        }
    )
    seen.quote_status = {
        r["id"]: r["status"]
        for r in await db.fetch(
            "SELECT id::text AS id, status FROM quote.quotes "
            "WHERE opportunity_id = ANY($1::uuid[])",
            ids,
        )
    }
    seen.orders = {}
    for r in await db.fetch(
        "SELECT opportunity_id::text AS opportunity, id::text AS id, quote_id::text AS quote "
        'FROM "order".orders WHERE opportunity_id = ANY($1::uuid[])',
        ids,
    ):
        seen.orders.setdefault(r["opportunity"], []).append(Order(r["id"], r["quote"]))
    seen.events = Counter()
    for schema, types in ONCE_PER_DEAL.items():
        for r in await db.fetch(
            f'SELECT subject, event_type, count(*) AS n FROM "{schema}".outbox '
            "WHERE subject = ANY($1::text[]) AND event_type = ANY($2::text[]) GROUP BY 1, 2",
            subjects,
            list(types),
        ):
            seen.events[(r["subject"], r["event_type"])] = r["n"]
    seen.unsent = await unsent(db, await outbox_schemas(db))


class OffsetsReader:
    """Dead letters and each consumer group's committed lag, from the broker.

    Committed offsets are read as a member reads them (Tansu does not answer the admin
    client's OffsetFetch), by a client per group that never joins it. The topics have
    `partitions` partitions each: the bench creates them so.
    """

    def __init__(self, bootstrap: str, partitions: int) -> None:
        self._bootstrap = bootstrap
        self._partitions = partitions
        self._ends = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self._groups: dict[str, AIOKafkaConsumer] = {}

    async def start(self) -> None:
        await self._ends.start()

    async def stop(self) -> None:
        for reader in (*self._groups.values(), self._ends):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.stop(), 10)

    async def _group(self, group: str) -> AIOKafkaConsumer:
        reader = self._groups.get(group)
        if reader is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap, group_id=group, enable_auto_commit=False
            )
            await reader.start()
            self._groups[group] = reader
        return reader

    async def read(self, groups: Iterable[str], seen: Observed) -> None:
        existing = await self._ends.topics()
        topics = [t for t in ALL_TOPICS if t in existing]
        letters = [dead_letter_topic(t) for t in ALL_TOPICS if dead_letter_topic(t) in existing]
        every = [TopicPartition(t, p) for t in (*topics, *letters) for p in range(self._partitions)]
        ends: dict[TopicPartition, int] = await self._ends.end_offsets(every)
        seen.dead_letters = {
            topic: sum(end for tp, end in ends.items() if tp.topic == topic) for topic in letters
        }
        read = {tp: end for tp, end in ends.items() if tp.topic in topics}
        seen.lag = {}
        for group in sorted(groups):
            reader = await self._group(group)
            committed = {tp: await reader.committed(tp) for tp in read}
            seen.lag[group] = committed_lag(committed, read)


def summary(deals: list[CompletedDeal], seen: Observed, found: list[str]) -> dict[str, Any]:
    """The report's `invariants` section."""
    return {
        "holds": not found,
        "deals_checked": len(deals),
        "violations": len(found),
        "first_violations": found[:SHOWN],
        "outbox_unsent": seen.unsent,
        "dead_letters": sum(seen.dead_letters.values()),
        "consumer_groups": len(seen.lag),
        "consumer_lag": sum(seen.lag.values()),
        "duplicates_skipped_by_inboxes": seen.duplicates_skipped,
    }
