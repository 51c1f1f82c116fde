"""What must hold once the system settles after a fault, checked from outside.

The checker reads the services' tables (read-only, in their PostgreSQL schemas) and
every record on the event topics and their dead-letter topics (from offset 0), and
sorts what it finds into:

- lost: an outbox row never seen on Kafka; an event a consumer group handles (and does
  not skip as changing nothing, `EventConsumer`'s `changes_nothing`) that is
  not in that group's inbox; a dead letter that is not one of the injected poison
  records; a poison record a group committed past without dead-lettering it;
- stuck: a quote left in accept_pending; an open quote of a closed opportunity; an
  accepted (202) deal whose opportunity is still open; an accepted quote without its
  order; a projection (quote's known_opportunities) that differs from its source (its
  stage only as open or closed, which is all that service keeps); a
  consumer group behind the end of a topic it consumes; a group not yet past a poison
  record;
- violations: a state no amount of waiting fixes: a won deal with the wrong quote, two
  orders for a quote, a race answered one way and closed the other, a sequence that is
  not 1..N, a record that changed state when it was delivered again;
- duplicated-and-deduped: records whose envelope id was already on Kafka (a relay
  re-send, or the chaos run's own re-deliveries).

Every check is scoped to the opportunities a phase touched, except the consumer groups'
lag, which is global.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from chaos.load import Deal
from chaos.records import EVENT_TOPICS, KafkaLog, Record
from chaos.stack import SERVICES, Stack
from dealflow_common.contracts.base import payload_class
from dealflow_quote.application import saga as quote_saga
from dealflow_quote.domain.access import OPEN_STAGES

SOURCES = {f"/dealflow/{service}": service for service in SERVICES}
OPEN_QUOTE = {"draft", "pending_approval", "approved", "presented", "accept_pending"}
POISON_KEY_PREFIX = b"chaos-poison:"
MAX_LISTED = 12


def schema(service: str) -> str:
    return f'"{service}"'


@dataclass(frozen=True)
class ConsumerGroup:
    """A service's consumer group: the topics it reads and the event types it applies."""

    group: str
    service: str
    topics: dict[str, frozenset[str]]
    changes_nothing: Callable[[dict[str, Any]], bool] = lambda _event: False
    """Events the group skips before its inbox (`EventConsumer`'s `changes_nothing`):
    never in its inbox, and not lost for that."""


# What each service's bootstrap gives its consumer as `changes_nothing`.
_CHANGES_NOTHING = {"quote": quote_saga.changes_nothing}


def _skipped_by(service: str) -> Callable[[dict[str, Any]], bool]:
    predicate = _CHANGES_NOTHING.get(service)
    if predicate is None:
        return lambda _event: False

    def skipped(event: dict[str, Any]) -> bool:
        cls = payload_class(str(event.get("type")), str(event.get("dataschema")))
        if cls is None:
            return False
        return bool(predicate(cls.model_validate(event.get("data"), extra="ignore")))

    return skipped


async def consumer_groups(stack: Stack) -> list[ConsumerGroup]:
    """From each running service's AsyncAPI document (its `receive` operations)."""
    groups = []
    async with aiohttp.ClientSession() as session:
        for service in SERVICES:
            async with session.get(f"{stack.urls(service)[0]}/asyncapi.json") as response:
                document = await response.json(loads=orjson.loads)
            topics: dict[str, frozenset[str]] = {}
            for operation in document["operations"].values():
                if operation["action"] != "receive":
                    continue
                channel = document["channels"][operation["channel"]["$ref"].split("/")[-1]]
                if channel["address"] not in EVENT_TOPICS:
                    continue  # commands come from the purge service, which the run leaves out
                names = {
                    document["components"]["messages"][m["$ref"].split("/")[-1]]["name"]
                    for m in operation["messages"]
                }
                topics[channel["address"]] = frozenset(names)
            # The group id is the service's name by convention (each bootstrap.py).
            groups.append(
                ConsumerGroup(f"{service}-service", service, topics, _skipped_by(service))
            )
    return groups


@dataclass
class Poison:
    """A record that cannot be applied, produced on purpose: where it is, what it should do."""

    kind: str
    topic: str
    partition: int
    offset: int
    key: bytes
    expected: dict[str, str]
    """Per consumer group of the topic: 'dlq', 'dlq-or-skip' (the design lets a consumer
    skip a type it does not handle) or 'skip' (a type the group does not apply)."""


@dataclass
class Scope:
    deals: list[Deal] = field(default_factory=list)
    extra_subjects: set[str] = field(default_factory=set)
    """Opportunities whose records a fault re-delivered."""
    frozen: dict[str, str] | None = None
    """A snapshot that re-deliveries must leave as it is."""
    frozen_subjects: set[str] = field(default_factory=set)
    poisons: list[Poison] = field(default_factory=list)
    dead_letters_from: int = 0
    """Index in the Kafka log from which dead letters belong to this scope."""

    @property
    def subjects(self) -> set[str]:
        return {d.opportunity_id for d in self.deals if d.opportunity_id} | self.extra_subjects


@dataclass
class Findings:
    events_checked: int = 0
    duplicates: int = 0
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not (self.lost or self.stuck or self.violations)


def _uuids(values: set[str]) -> list[uuid.UUID]:
    found = []
    for value in values:
        try:
            found.append(uuid.UUID(value))
        except ValueError:
            continue
    return found


class Checker:
    def __init__(self, stack: Stack, log: KafkaLog, groups: list[ConsumerGroup]) -> None:
        self.stack = stack
        self.log = log
        self.groups = groups
        self._readers: dict[str, AIOKafkaConsumer] = {}

    async def close(self) -> None:
        for reader in self._readers.values():
            await reader.stop()

    async def check(self, scope: Scope) -> Findings:
        findings = Findings()
        connection = await self.stack.connect()
        try:
            subjects = scope.subjects
            events = self._events_by_subject(subjects, findings)
            await self._outbox_on_kafka(connection, subjects, events, findings)
            await self._applied_by_consumers(connection, events, findings)
            await self._saga(connection, scope, findings)
            if scope.frozen is not None:
                now = await snapshot(connection, scope.frozen_subjects)
                _unchanged(scope.frozen, now, findings)
        finally:
            await connection.close()
        committed = await self._committed_offsets()
        self._dead_letters(scope, committed, findings)
        await self._lag(committed, findings)
        return findings

    # Events -----------------------------------------------------------------------

    def _events_by_subject(
        self, subjects: set[str], findings: Findings
    ) -> dict[tuple[str, str], dict[str, Record]]:
        """(source, subject) -> envelope id -> first record; counts re-sent copies."""
        found: dict[tuple[str, str], dict[str, Record]] = defaultdict(dict)
        for record in self.log.events():
            event = record.event
            if event is None or event.get("source") not in SOURCES:
                continue
            if record.subject not in subjects:
                continue
            copies = found[(str(event["source"]), str(record.subject))]
            if str(event.get("id")) in copies:
                findings.duplicates += 1
            else:
                copies[str(event.get("id"))] = record
        return found

    async def _outbox_on_kafka(
        self,
        connection: asyncpg.Connection,
        subjects: set[str],
        events: dict[tuple[str, str], dict[str, Record]],
        findings: Findings,
    ) -> None:
        for source, service in SOURCES.items():
            rows = await connection.fetch(
                f"SELECT event_id::text AS id, subject, sequence, event_type "
                f"FROM {schema(service)}.outbox WHERE subject = ANY($1::text[])",
                list(subjects),
            )
            findings.events_checked += len(rows)
            by_subject: dict[str, list[asyncpg.Record]] = defaultdict(list)
            for row in rows:
                by_subject[row["subject"]].append(row)
            for subject in subjects:
                written = by_subject.get(subject, [])
                seen = events.get((source, subject), {})
                for row in written:
                    if row["id"] not in seen:
                        findings.lost.append(
                            f"{service} outbox row {row['event_type']}#{row['sequence']} of "
                            f"{subject} never reached Kafka"
                        )
                written_ids = {row["id"] for row in written}
                for event_id, record in seen.items():
                    if event_id not in written_ids:
                        findings.violations.append(
                            f"{record.topic}@{record.offset}: event {event_id} of {subject} is "
                            f"not in {service}'s outbox"
                        )
                sequences = sorted(int(r.event["sequence"]) for r in seen.values() if r.event)
                if (
                    seen
                    and len(seen) == len(written)
                    and sequences != list(range(1, len(written) + 1))
                ):
                    findings.violations.append(
                        f"{service} sequences of {subject} are {sequences}, not 1..{len(written)}"
                    )

    async def _applied_by_consumers(
        self,
        connection: asyncpg.Connection,
        events: dict[tuple[str, str], dict[str, Record]],
        findings: Findings,
    ) -> None:
        for group in self.groups:
            should = {
                event_id: record
                for copies in events.values()
                for event_id, record in copies.items()
                if record.event
                and record.event.get("type") in group.topics.get(record.topic, ())
                and not group.changes_nothing(record.event)
            }
            if not should:
                continue
            applied = {
                row["id"]
                for row in await connection.fetch(
                    f"SELECT event_id::text AS id FROM {schema(group.service)}.inbox "
                    "WHERE consumer_group = $1 AND event_id = ANY($2::uuid[])",
                    group.group,
                    _uuids(set(should)),
                )
            }
            for event_id, record in should.items():
                if event_id not in applied:
                    assert record.event is not None
                    findings.lost.append(
                        f"{group.group} never applied {record.event['type']}"
                        f"#{record.event.get('sequence')} of {record.subject} "
                        f"({record.topic}/{record.partition}@{record.offset})"
                    )

    # The saga and the projection ---------------------------------------------------

    async def _saga(self, connection: asyncpg.Connection, scope: Scope, findings: Findings) -> None:
        ids = _uuids(scope.subjects)
        opportunities = {
            row["id"]: row
            for row in await connection.fetch(
                "SELECT id::text AS id, stage, won_quote_id::text AS won, team_id "
                "FROM opportunity.opportunities WHERE id = ANY($1::uuid[])",
                ids,
            )
        }
        owners: dict[str, list[str]] = defaultdict(list)
        for row in await connection.fetch(
            "SELECT opportunity_id::text AS id, user_id FROM opportunity.opportunity_owners "
            "WHERE opportunity_id = ANY($1::uuid[]) ORDER BY opportunity_id, position",
            ids,
        ):
            owners[row["id"]].append(row["user_id"])
        quotes: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for row in await connection.fetch(
            "SELECT id::text AS id, opportunity_id::text AS opportunity, status "
            "FROM quote.quotes WHERE opportunity_id = ANY($1::uuid[])",
            ids,
        ):
            quotes[row["opportunity"]].append(row)
        known = {
            row["id"]: row
            for row in await connection.fetch(
                "SELECT id::text AS id, stage, owners::text AS owners, team_id "
                "FROM quote.known_opportunities WHERE id = ANY($1::uuid[])",
                ids,
            )
        }
        orders = Counter(
            {
                row["quote"]: row["n"]
                for row in await connection.fetch(
                    'SELECT quote_id::text AS quote, count(*) AS n FROM "order".orders '
                    "WHERE opportunity_id = ANY($1::uuid[]) GROUP BY quote_id",
                    ids,
                )
            }
        )

        for opportunity_id, opportunity in opportunities.items():
            stage, won = opportunity["stage"], opportunity["won"]
            for quote in quotes.get(opportunity_id, []):
                status, quote_id = quote["status"], quote["id"]
                where = f"quote {quote_id} of {opportunity_id}"
                if status == "accept_pending":
                    findings.stuck.append(f"{where} left in accept_pending (opportunity {stage})")
                elif status in OPEN_QUOTE and stage.startswith("closed_"):
                    findings.stuck.append(f"{where} still {status}, opportunity {stage}")
                if status == "accepted":
                    if stage != "closed_won" or won != quote_id:
                        _open_yet_or_wrong(
                            findings,
                            stage,
                            f"{where} accepted but its opportunity is {stage}, won_quote_id {won}",
                        )
                    if orders[quote_id] == 0:
                        findings.stuck.append(f"{where} accepted but has no order")
                    elif orders[quote_id] > 1:
                        findings.violations.append(f"{where} has {orders[quote_id]} orders")
                elif orders[quote_id]:
                    findings.violations.append(f"{where} is {status} but has an order")
            if stage == "closed_won" and won:
                statuses = {q["id"]: q["status"] for q in quotes.get(opportunity_id, [])}
                if statuses.get(won) not in ("accepted", "accept_pending"):
                    findings.stuck.append(
                        f"{opportunity_id} won with quote {won}, which is {statuses.get(won)}"
                    )
            self._projection(opportunity_id, opportunity, owners[opportunity_id], known, findings)

        for deal in scope.deals:
            if not deal.opportunity_id or deal.opportunity_id not in opportunities:
                continue
            row = opportunities[deal.opportunity_id]
            stage, won = row["stage"], row["won"]
            name = f"deal {deal.number} ({deal.opportunity_id})"
            if deal.racing_lose and deal.lose_status == 200:
                if stage != "closed_lost":
                    findings.violations.append(f"{name}: lose answered 200 but it is {stage}")
            elif deal.racing_lose and deal.lose_status == 409:
                if stage != "closed_won":
                    _open_yet_or_wrong(
                        findings, stage, f"{name}: lose refused (409) but it is {stage}"
                    )
            elif (
                deal.accepted
                and not deal.racing_lose
                and (stage != "closed_won" or won != deal.quote_a)
            ):
                _open_yet_or_wrong(
                    findings, stage, f"{name}: accept answered 202 but it is {stage}, won {won}"
                )

    @staticmethod
    def _projection(
        opportunity_id: str,
        opportunity: asyncpg.Record,
        owners: list[str],
        known: dict[str, asyncpg.Record],
        findings: Findings,
    ) -> None:
        projected = known.get(opportunity_id)
        if projected is None:
            findings.stuck.append(f"quote's projection has no row for {opportunity_id}")
            return
        # The quote service keeps whether a deal is open, not which open stage it is in
        # (it skips moves between open stages): the stages are compared as that.
        source = (_openness(opportunity["stage"]), owners, opportunity["team_id"])
        copy = (
            _openness(projected["stage"]),
            orjson.loads(projected["owners"]),
            projected["team_id"],
        )
        if source != copy:
            findings.stuck.append(
                f"quote's projection of {opportunity_id} is {copy}, the opportunity {source}"
            )

    # Dead letters and consumer groups ---------------------------------------------

    async def _committed_offsets(self) -> dict[str, dict[TopicPartition, int]]:
        """Each group's committed offsets, read the way its members read them (Tansu does
        not answer the admin client's OffsetFetch); the reader never joins the group."""
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in self.groups:
            reader = self._readers.get(group.group)
            if reader is None:
                reader = AIOKafkaConsumer(
                    bootstrap_servers=self.stack.bootstrap_servers,
                    group_id=group.group,
                    enable_auto_commit=False,
                    client_id="chaos-checker",
                )
                await reader.start()
                self._readers[group.group] = reader
            offsets = committed[group.group] = {}
            for topic in group.topics:
                for partition in sorted(self.log.partitions(topic)):
                    tp = TopicPartition(topic, partition)
                    offsets[tp] = await reader.committed(tp) or 0
        return committed

    def _dead_letters(
        self, scope: Scope, committed: dict[str, dict[TopicPartition, int]], findings: Findings
    ) -> None:
        letters = [
            r for r in self.log.records[scope.dead_letters_from :] if r.topic.endswith(".dlq")
        ]
        dead_lettered = {
            (r.key, r.header("dealflow-dlq-consumer-group")) for r in self.log.dead_letters()
        }
        for letter in letters:
            if letter.key and letter.key.startswith(POISON_KEY_PREFIX):
                continue
            findings.lost.append(
                f"dead letter in {letter.topic}@{letter.offset} from "
                f"{letter.header('dealflow-dlq-consumer-group')}: "
                f"{letter.header('dealflow-dlq-reason')}: "
                f"{(letter.header('dealflow-dlq-error') or '')[:200]}"
            )
        expected_letters = [
            (p.key, g) for p in scope.poisons for g, e in p.expected.items() if e != "skip"
        ]
        if expected_letters:
            found = sum(pair in dead_lettered for pair in expected_letters)
            findings.notes.append(
                f"{found} of {len(expected_letters)} expected dead letters of "
                f"{len(scope.poisons)} poison records found"
            )
        for poison in scope.poisons:
            for group, expected in poison.expected.items():
                if (poison.key, group) in dead_lettered:
                    if expected == "skip":
                        findings.notes.append(f"{group} dead-lettered {poison.kind} (may skip it)")
                    continue
                position = committed.get(group, {}).get(
                    TopicPartition(poison.topic, poison.partition), -1
                )
                where = f"{poison.kind} on {poison.topic}/{poison.partition}@{poison.offset}"
                if position <= poison.offset:
                    findings.stuck.append(f"{group} is not past poison {where}")
                elif expected == "dlq":
                    findings.lost.append(
                        f"{group} committed past poison {where} without a dead letter"
                    )
                elif expected == "dlq-or-skip":
                    findings.notes.append(f"{group} skipped {where} without a dead letter")

    async def _lag(
        self, committed: dict[str, dict[TopicPartition, int]], findings: Findings
    ) -> None:
        for group in self.groups:
            partitions = [
                TopicPartition(topic, p)
                for topic in group.topics
                for p in sorted(self.log.partitions(topic))
            ]
            ends = await self.log.end_offsets(partitions)
            for tp in partitions:
                behind = ends.get(tp, 0) - max(committed[group.group].get(tp, 0), 0)
                if behind > 0:
                    findings.stuck.append(
                        f"{group.group} is {behind} records behind on {tp.topic}/{tp.partition}"
                    )


def _open_yet_or_wrong(findings: Findings, stage: str, text: str) -> None:
    """A deal still open may yet get there (stuck); a closed one never will (violation)."""
    (findings.violations if stage.startswith("closed_") else findings.stuck).append(text)


# Snapshots (records delivered again must change nothing) ---------------------------


async def snapshot(connection: asyncpg.Connection, subjects: set[str]) -> dict[str, str]:
    """Every row about these opportunities in every service, and their outbox counts."""
    ids = _uuids(subjects)
    queries = {
        "opportunity.opportunities": "SELECT id::text AS id, to_jsonb(t)::text AS doc "
        "FROM opportunity.opportunities t WHERE id = ANY($1::uuid[])",
        "quote.quotes": "SELECT id::text AS id, to_jsonb(t)::text AS doc "
        "FROM quote.quotes t WHERE opportunity_id = ANY($1::uuid[])",
        "quote.known_opportunities": "SELECT id::text AS id, to_jsonb(t)::text AS doc "
        "FROM quote.known_opportunities t WHERE id = ANY($1::uuid[])",
        "order.orders": "SELECT id::text AS id, to_jsonb(t)::text AS doc "
        'FROM "order".orders t WHERE opportunity_id = ANY($1::uuid[])',
    }
    rows: dict[str, str] = {}
    for table, query in queries.items():
        for row in await connection.fetch(query, ids):
            rows[f"{table} {row['id']}"] = row["doc"]
    for service in SERVICES:
        for row in await connection.fetch(
            f"SELECT subject, count(*) AS n FROM {schema(service)}.outbox "
            "WHERE subject = ANY($1::text[]) GROUP BY subject",
            list(subjects),
        ):
            rows[f"{service}.outbox events of {row['subject']}"] = str(row["n"])
    return rows


def _unchanged(before: dict[str, str], after: dict[str, str], findings: Findings) -> None:
    for key in sorted(before.keys() | after.keys()):
        was, now = before.get(key), after.get(key)
        if was == now:
            continue
        if was is None or now is None:
            findings.violations.append(f"{key} {'appeared' if was is None else 'disappeared'}")
            continue
        old, new = orjson.loads(was), orjson.loads(now)
        if isinstance(old, dict) and isinstance(new, dict):
            changed = {
                k: (old.get(k), new.get(k))
                for k in old.keys() | new.keys()
                if old.get(k) != new.get(k)
            }
            findings.violations.append(f"{key} changed: {changed}")
        else:
            findings.violations.append(f"{key}: {was} -> {now}")


def listed(items: list[str], limit: int = MAX_LISTED) -> list[str]:
    """The first `limit` items, and how many more there were."""
    return items[:limit] + ([f"... and {len(items) - limit} more"] if len(items) > limit else [])


def _openness(stage: str) -> str:
    """An open stage as "open" (the quote service's own notion of open, which is what
    its projection keeps); a closed (or purge) stage as itself."""
    return "open" if stage in OPEN_STAGES else stage
