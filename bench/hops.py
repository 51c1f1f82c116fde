"""Where a deal's accept-to-won time goes, part by part: the half load's latency split.

The accept saga crosses two services and the broker three times: the quote service
records `quote.acceptance_requested`, the opportunity service applies it and records
`opportunity.won`, the quote service applies that and records `quote.accepted`, and the
bench's watcher sees it on Kafka. Each crossing is timed from what the system writes
anyway, so nothing is added to the path being measured:

- an event's outbox row was written at its `created_at` (inside the transaction that
  made it, before the commit);
- the relay handed it to the producer at its Kafka record's timestamp (the producer
  stamps a record when it is sent, `CreateTime`);
- the next service started the transaction that applied it at its inbox row's
  `applied_at`;
- the watcher saw it when its fetch returned.

Every one of these is the machine's wall clock, read by processes on one host. The
parts of one deal add up to its accept-to-won time as the driver measured it (in wall
time, from just before the accept call).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from bench.measure import percentiles

ACCEPTANCE_REQUESTED = "quote.acceptance_requested"
WON = "opportunity.won"
ACCEPTED = "quote.accepted"
SAGA_EVENTS = (ACCEPTANCE_REQUESTED, WON, ACCEPTED)

PARTS = (
    ("accept request", "the accept call until its event is written"),
    ("quote relay", "written until handed to the producer"),
    ("to opportunity", "on the broker until the opportunity service starts applying it"),
    ("in opportunity", "applying it until `opportunity.won` is written"),
    ("opportunity relay", "written until handed to the producer"),
    ("to quote", "on the broker until the quote service starts applying it"),
    ("in quote", "applying it until `quote.accepted` is written"),
    ("quote relay again", "written until handed to the producer"),
    ("to the watcher", "on the broker until the bench's watcher has it"),
)
"""The parts, in the order a deal passes them, with what each one is."""


@dataclass
class SeenOnKafka:
    """One saga event as the watcher saw it: its record's timestamp (when the relay
    handed it to the producer) and when the watcher's fetch returned it, both in ms of
    wall time."""

    sent_ms: float
    seen_ms: float


@dataclass
class AcceptTimes:
    """What the driver and the watcher saw of one deal's accept saga."""

    opportunity_id: str
    accept_called_ms: float
    """Wall time just before the accept call, in ms."""
    on_kafka: Mapping[str, SeenOnKafka]
    """By event type (`SAGA_EVENTS`)."""


def _db_times(quote: str, opportunity: str) -> str:
    """Each deal's written and applied times of the three saga events, from the quote
    and opportunity schemas (one database in the benchmark, a schema per service)."""
    q, o = (f'"{schema}"' for schema in (quote, opportunity))
    return f"""
SELECT requested.subject,
       requested.created_at AS requested_written,
       opportunity_in.applied_at AS requested_applied,
       won.created_at AS won_written,
       quote_in.applied_at AS won_applied,
       accepted.created_at AS accepted_written
FROM {q}.outbox AS requested
JOIN {o}.inbox AS opportunity_in ON opportunity_in.event_id = requested.event_id
JOIN {o}.outbox AS won ON won.subject = requested.subject AND won.event_type = $2
JOIN {q}.inbox AS quote_in ON quote_in.event_id = won.event_id
JOIN {q}.outbox AS accepted
  ON accepted.subject = requested.subject AND accepted.event_type = $3
WHERE requested.event_type = $1 AND requested.subject = ANY($4::text[])
"""


def _ms(moment: datetime) -> float:
    return moment.timestamp() * 1000


def parts_of(seen: AcceptTimes, written: Mapping[str, Any]) -> list[float] | None:
    """One deal's parts (`PARTS`) in ms, or None when an event was not seen on Kafka."""
    try:
        requested, won, accepted = (seen.on_kafka[t] for t in SAGA_EVENTS)
    except KeyError:
        return None
    marks = [
        seen.accept_called_ms,
        _ms(written["requested_written"]),
        requested.sent_ms,
        _ms(written["requested_applied"]),
        _ms(written["won_written"]),
        won.sent_ms,
        _ms(written["won_applied"]),
        _ms(written["accepted_written"]),
        accepted.sent_ms,
        accepted.seen_ms,
    ]
    return [later - earlier for earlier, later in itertools.pairwise(marks)]


def summarise(per_deal: Sequence[Sequence[float]]) -> dict[str, dict[str, float | None]]:
    """Each part's mean, p50 and p99 over the deals, in ms; the means add up to the
    mean accept-to-won time, the percentiles do not."""
    summary: dict[str, dict[str, float | None]] = {}
    for index, (name, _) in enumerate(PARTS):
        values = [parts[index] for parts in per_deal]
        shares = percentiles(values)
        summary[name] = {
            "mean": round(statistics.fmean(values), 1) if values else None,
            "p50": shares["p50"],
            "p99": shares["p99"],
        }
    return summary


async def accept_to_won_parts(
    db: asyncpg.Connection,
    deals: Sequence[AcceptTimes],
    *,
    quote_schema: str = "quote",
    opportunity_schema: str = "opportunity",
) -> dict[str, Any]:
    """The parts of the given deals' accept-to-won time (`summarise`), with how many
    deals they were measured on: a deal the database or the watcher has not every time
    of is left out, not guessed."""
    rows = await db.fetch(
        _db_times(quote_schema, opportunity_schema),
        ACCEPTANCE_REQUESTED,
        WON,
        ACCEPTED,
        [d.opportunity_id for d in deals],
    )
    written = {row["subject"]: row for row in rows}
    per_deal = [
        parts
        for deal in deals
        if deal.opportunity_id in written
        and (parts := parts_of(deal, written[deal.opportunity_id])) is not None
    ]
    return {"deals": len(per_deal), "ms": summarise(per_deal)}
