"""The faults, one per phase. Each runs while a fresh batch of deals is under way.

A fault's `inject` returns when the fault is over (the service restarted, the broker
resumed, the proxy passing bytes again); `undo` puts things back if `inject` was
interrupted. What a fault did is written to `ctx.notes` for the report, and where it
matters in the service's own log (a "----- chaos ... -----" line).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from chaos.invariants import POISON_KEY_PREFIX, ConsumerGroup, Poison, Scope
from chaos.load import Load
from chaos.records import EVENT_TOPICS, KafkaLog, Record
from chaos.stack import SERVICES, Stack, progress


@dataclass(frozen=True)
class Profile:
    """How big and how long: the full run, or --short (CI)."""

    short: bool
    concurrency: int
    """Clients running deals at once."""
    min_deals: int
    max_deals: int
    """Deals started while a fault lasts, at most (a few more start after it)."""
    step_deadline: float
    """How long a deal's client keeps retrying one call."""
    outcome_wait: float
    """How long a deal waits to see its opportunity won or lost on Kafka."""
    settle_timeout: float
    """How long the checker waits for every invariant to hold after a phase's deals."""
    quiet_seconds: float
    """How long the load runs in faults that have no duration of their own."""
    pauses: tuple[float, float]
    proxy_seconds: float
    reset_rounds: int

    @classmethod
    def of(cls, short: bool) -> Profile:
        if short:
            return cls(
                short=True,
                concurrency=6,
                min_deals=8,
                max_deals=200,
                step_deadline=30,
                outcome_wait=30,
                settle_timeout=40,
                quiet_seconds=3,
                pauses=(5, 15),
                proxy_seconds=5,
                reset_rounds=3,
            )
        return cls(
            short=False,
            concurrency=10,
            min_deals=40,
            max_deals=600,
            step_deadline=75,
            outcome_wait=90,
            settle_timeout=120,
            quiet_seconds=15,
            pauses=(5, 30),
            proxy_seconds=10,
            reset_rounds=6,
        )


@dataclass
class FaultContext:
    stack: Stack
    log: KafkaLog
    load: Load
    producer: AIOKafkaProducer
    groups: list[ConsumerGroup]
    profile: Profile
    settled_subjects: set[str]
    """Opportunities of earlier phases that settled: what re-deliveries may replay."""
    scope: Scope
    rng: random.Random
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)
        progress(f"  {text}")


class Fault:
    """`name` is what --only takes; `title` is the table's label."""

    def __init__(self, name: str, title: str) -> None:
        self.name = name
        self.title = title

    async def prepare(self, ctx: FaultContext) -> None:
        """Before the load starts: say which finished deals must not change."""

    async def inject(self, ctx: FaultContext) -> None:
        raise NotImplementedError

    async def undo(self, ctx: FaultContext) -> None:
        """Called after `inject`, even when it failed or was cancelled."""


class NoFault(Fault):
    def __init__(self) -> None:
        super().__init__("baseline", "none (baseline)")

    async def inject(self, ctx: FaultContext) -> None:
        await asyncio.sleep(ctx.profile.quiet_seconds)


# 1. SIGKILL of a service ----------------------------------------------------------


KILL_POINTS: dict[str, str] = {
    # The relay has just read unsent rows (it is sending them and waiting for the acks)
    # or is stamping them sent.
    "during the relay": """
        SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = {app} AND (
            (query ILIKE '%FROM outbox%sent_at IS NULL%' AND query NOT ILIKE '%count(%'
             AND state_change > clock_timestamp() - interval '50 milliseconds'
             AND EXISTS (SELECT 1 FROM {schema}.outbox WHERE sent_at IS NULL))
            OR (state <> 'idle' AND query ILIKE 'UPDATE outbox SET sent_at%')))
    """,
    # Committed outbox rows the relay has not published yet.
    "right after commits, before the relay published": """
        SELECT EXISTS (SELECT 1 FROM {schema}.outbox WHERE sent_at IS NULL)
    """,
    # A consumer's transaction has recorded an event in its inbox, not yet committed.
    "during a consumer batch": """
        SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = {app}
            AND state IN ('active', 'idle in transaction') AND query ILIKE '%INSERT INTO inbox%')
    """,
}

# The windows above last a few milliseconds: the database itself watches for them
# (a loop of the harness's own session, a fresh snapshot per check), so the kill
# follows within about a millisecond.
_WAIT_FUNCTION = """
CREATE OR REPLACE FUNCTION pg_temp.chaos_wait(condition text, seconds float8)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => seconds);
    hit boolean;
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();
        EXECUTE condition INTO hit;
        IF hit THEN RETURN true; END IF;
        IF clock_timestamp() > deadline THEN RETURN false; END IF;
        PERFORM pg_sleep(0.001);
    END LOOP;
END $$
"""


class KillService(Fault):
    def __init__(self, service: str, points: list[str]) -> None:
        super().__init__(f"kill-{service}", f"SIGKILL {service} x{len(points)}")
        self.service = service
        self.points = points

    async def inject(self, ctx: FaultContext) -> None:
        await asyncio.sleep(1.0)
        schema = f'"{self.service}"'
        connection = await ctx.stack.connect()
        try:
            await connection.execute(_WAIT_FUNCTION)
            for point in self.points:
                query = KILL_POINTS[point].format(schema=schema, app=f"'dealflow-{self.service}'")
                hit = await self._wait_for(connection, query, 15.0)
                why = point if hit else f"{point} (not seen within 15 s: killed anyway)"
                await ctx.stack.kill(self.service, why)
                unsent = await connection.fetchval(
                    f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL"
                )
                await asyncio.sleep(ctx.rng.uniform(0.2, 1.0))
                took = await ctx.stack.restart(self.service)
                ctx.note(
                    f"SIGKILL {self.service} {why}, {unsent} outbox rows unsent at the kill; "
                    f"ready {took:.1f}s after restart"
                )
                await asyncio.sleep(2.0)
        finally:
            await connection.close()

    async def undo(self, ctx: FaultContext) -> None:
        replica = ctx.stack.primary(self.service)
        if replica.process.process is None or replica.process.process.returncode is not None:
            await ctx.stack.restart(self.service)

    @staticmethod
    async def _wait_for(connection: asyncpg.Connection, query: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Half a second at a time, so that a cancelled run does not wait for it.
            if await connection.fetchval("SELECT pg_temp.chaos_wait($1, 0.5)", query):
                return True
        return False


# 2. The broker paused ---------------------------------------------------------------


class PauseBroker(Fault):
    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(name, f"broker paused {seconds:.0f} s")
        self.seconds = seconds

    async def inject(self, ctx: FaultContext) -> None:
        await asyncio.sleep(1.5)
        ctx.stack.pause_broker()
        ctx.note(f"broker SIGSTOP for {self.seconds:.0f}s")
        await asyncio.sleep(self.seconds)
        ctx.stack.resume_broker()

    async def undo(self, ctx: FaultContext) -> None:
        ctx.stack.resume_broker()


# 3. The network between everyone and the broker ---------------------------------------


class ProxyFault(Fault):
    async def undo(self, ctx: FaultContext) -> None:
        assert ctx.stack.proxy is not None
        ctx.stack.proxy.pass_through()


class ProxyLatency(ProxyFault):
    def __init__(self, delay: float) -> None:
        super().__init__("proxy-latency", f"+{delay * 1000:.0f} ms each way to broker")
        self.delay = delay

    async def inject(self, ctx: FaultContext) -> None:
        await asyncio.sleep(1.0)
        assert ctx.stack.proxy is not None
        ctx.stack.proxy.add_latency(self.delay)
        await asyncio.sleep(ctx.profile.proxy_seconds)
        ctx.stack.proxy.pass_through()
        ctx.note(f"{self.delay * 1000:.0f} ms added each way for {ctx.profile.proxy_seconds:.0f}s")


class ProxyBlackhole(ProxyFault):
    def __init__(self) -> None:
        super().__init__("proxy-blackhole", "broker blackholed")

    async def inject(self, ctx: FaultContext) -> None:
        await asyncio.sleep(1.0)
        assert ctx.stack.proxy is not None
        ctx.stack.proxy.blackhole()
        await asyncio.sleep(ctx.profile.proxy_seconds)
        ctx.stack.proxy.pass_through()
        ctx.note(f"nothing forwarded to or from the broker for {ctx.profile.proxy_seconds:.0f}s")


class ProxyReset(ProxyFault):
    def __init__(self, rounds: int) -> None:
        super().__init__("proxy-reset", f"broker connections reset x{rounds}")
        self.rounds = rounds

    async def inject(self, ctx: FaultContext) -> None:
        proxy = ctx.stack.proxy
        assert proxy is not None
        for _ in range(self.rounds):
            await asyncio.sleep(ctx.rng.uniform(1.0, 2.5))
            before = proxy.connections_reset
            proxy.reset()
            await asyncio.sleep(1.0)  # new connections are reset too meanwhile
            proxy.pass_through()
            ctx.note(f"reset {proxy.connections_reset - before} broker connections within 1 s")


# 4. Poison records ----------------------------------------------------------------------


class PoisonRecords(Fault):
    def __init__(self) -> None:
        super().__init__("poison", "poison records")

    async def inject(self, ctx: FaultContext) -> None:
        await asyncio.sleep(1.0)
        planned = [p for topic in EVENT_TOPICS for p in _poisons(topic, ctx.groups)]
        ctx.rng.shuffle(planned)
        for p in planned:
            meta = await ctx.producer.send_and_wait(p.topic, p.value, key=p.key, headers=p.headers)
            ctx.scope.poisons.append(
                Poison(p.kind, p.topic, meta.partition, meta.offset, p.key, p.expected)
            )
            await asyncio.sleep(0.2)
        ctx.note(f"{len(planned)} poison records produced on {len(EVENT_TOPICS)} topics")


@dataclass(frozen=True)
class _PoisonRecord:
    kind: str
    topic: str
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    expected: dict[str, str]
    """Per consumer group of the topic (see invariants.Poison)."""


def _envelope(event_type: str, dataschema: str, subject: str) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/dealflow/chaos",
            "type": event_type,
            "subject": subject,
            "time": "2026-01-01T00:00:00+00:00",
            "datacontenttype": "application/json",
            "dataschema": dataschema,
            "data": {"chaos": True},
            "correlationid": "chaos-poison",
            "sequence": 1,
        }
    )


def _poisons(topic: str, groups: list[ConsumerGroup]) -> list[_PoisonRecord]:
    """Every kind of poison record for one topic. Each has a key of its own (the DLQ keeps
    it, so the checker knows its dead letters) and a subject no deal has."""
    readers = [g for g in groups if topic in g.topics]
    subject = str(uuid.uuid4())
    marker: list[tuple[str, bytes | None]] = [("chaos-poison", b"1")]

    def poison(
        kind: str,
        value: bytes | None,
        expected: str | dict[str, str] = "dlq",
        header: tuple[str, bytes | None] | None = None,
    ) -> _PoisonRecord:
        key = POISON_KEY_PREFIX + f"{kind}:{subject}".encode()
        if isinstance(expected, str):
            expected = {g.group: expected for g in readers}
        headers = [*marker, *([header] if header else [])]
        return _PoisonRecord(kind, topic, key, value, headers, expected)

    made = [
        poison("bad JSON", b'{"specversion": "1.0", "id"'),
        poison(
            "unknown type",
            _envelope("chaos.unknown", "urn:dealflow:schema:chaos.unknown:v1", subject),
            "dlq-or-skip",
        ),
        poison(
            "null header value",
            b'{"hello": "not a CloudEvent"}',
            header=("x-chaos-null", None),
        ),
        poison("key without value", None),
        poison(
            "non-UTF-8 header",
            b'{"hello": "not a CloudEvent either"}',
            header=("x-chaos-bytes", b"\xff\xfe\xc3\x28"),
        ),
    ]
    for reader in readers:
        # A type this group applies, with a schema version nobody knows.
        event_type = sorted(reader.topics[topic])[0]
        made.append(
            poison(
                f"wrong dataschema ({event_type})",
                _envelope(event_type, f"urn:dealflow:schema:{event_type}:v999", subject),
                {g.group: "dlq" if event_type in g.topics[topic] else "skip" for g in readers},
            )
        )
    return made


# 5, 6. Records delivered again ----------------------------------------------------------


def _replayable(ctx: FaultContext, subjects: set[str] | None = None) -> list[Record]:
    return [
        r
        for r in ctx.log.events()
        if r.event is not None
        and r.subject in (subjects if subjects is not None else ctx.settled_subjects)
        and not (r.key or b"").startswith(POISON_KEY_PREFIX)
    ]


async def _produce_again(ctx: FaultContext, records: list[Record]) -> None:
    """As they were: same partition, key, value and headers."""
    pending = [
        await ctx.producer.send(
            r.topic, r.value, key=r.key, partition=r.partition, headers=list(r.headers)
        )
        for r in records
    ]
    await asyncio.gather(*pending)


class Redeliver(Fault):
    def __init__(self) -> None:
        super().__init__("redeliver", "every event delivered again")

    async def prepare(self, ctx: FaultContext) -> None:
        ctx.scope.frozen_subjects = set(ctx.settled_subjects)

    async def inject(self, ctx: FaultContext) -> None:
        records = _replayable(ctx, ctx.scope.frozen_subjects)
        ctx.scope.extra_subjects |= {r.subject for r in records if r.subject}
        await asyncio.sleep(1.0)
        started = time.monotonic()
        await _produce_again(ctx, records)
        ctx.note(
            f"{len(records)} records of {len(ctx.scope.extra_subjects)} finished deals "
            f"produced again in {time.monotonic() - started:.1f}s"
        )
        await asyncio.sleep(ctx.profile.quiet_seconds)


class ReplayOutOfOrder(Fault):
    def __init__(self) -> None:
        super().__init__("replay-out-of-order", "old records replayed out of order")

    async def prepare(self, ctx: FaultContext) -> None:
        finished = sorted(ctx.settled_subjects)
        count = min(len(finished), 6 if ctx.profile.short else 20)
        ctx.scope.frozen_subjects = set(ctx.rng.sample(finished, count))

    async def inject(self, ctx: FaultContext) -> None:
        chosen = sorted(ctx.scope.frozen_subjects)
        ctx.scope.extra_subjects |= set(chosen)
        by_subject: dict[str, list[Record]] = defaultdict(list)
        for record in _replayable(ctx, set(chosen)):
            by_subject[str(record.subject)].append(record)
        replayed = 0
        for n, subject in enumerate(chosen):
            records = by_subject[subject]
            if n % 2:
                ctx.rng.shuffle(records)
            else:
                records.reverse()
            await _produce_again(ctx, records)
            replayed += len(records)
        ctx.note(f"{replayed} records of {len(chosen)} finished deals replayed reversed/shuffled")

        # Live deals: their oldest records again, while newer ones are being applied.
        deadline = time.monotonic() + ctx.profile.quiet_seconds + 3
        live_replays: set[str] = set()
        while time.monotonic() < deadline:
            for deal in ctx.load.live():
                subject = str(deal.opportunity_id)
                records = _replayable(ctx, {subject})
                if len(records) >= 4:
                    await _produce_again(ctx, records[:2][::-1])
                    live_replays.add(subject)
            await asyncio.sleep(0.5)
        ctx.note(f"oldest records of {len(live_replays)} live deals replayed while they ran")


# 7. Two replicas of each service ------------------------------------------------------


class Replicas(Fault):
    def __init__(self) -> None:
        super().__init__("replicas", "replicas 1 -> 2 -> 1")

    async def inject(self, ctx: FaultContext) -> None:
        await asyncio.sleep(1.0)
        started = time.monotonic()
        await asyncio.gather(*(ctx.stack.add_replica(service) for service in SERVICES))
        ctx.note(
            f"a second replica of each service serving after {time.monotonic() - started:.0f}s"
        )
        await asyncio.sleep(ctx.profile.quiet_seconds)
        for service in SERVICES:
            await ctx.stack.retire_oldest(service)
        ctx.note("the first replica of each service stopped (SIGTERM), one after the other")


# 8. PostgreSQL connections killed -------------------------------------------------------


class KillDatabaseConnections(Fault):
    rounds = 3

    def __init__(self) -> None:
        super().__init__("db-connections", f"DB connections terminated x{self.rounds}")

    async def inject(self, ctx: FaultContext) -> None:
        connection = await ctx.stack.connect()
        try:
            for _ in range(self.rounds):
                await asyncio.sleep(ctx.rng.uniform(1.0, 3.0))
                killed = await connection.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    # Only this run's database: other runs on the server are not ours.
                    "WHERE application_name LIKE 'dealflow-%' AND datname = current_database()"
                )
                ctx.note(f"terminated {killed} service connections")
        finally:
            await connection.close()


def _kill_points(service: str, profile: Profile) -> list[str]:
    """Every point for each service; --short kills each service once, at a different
    point each (a restart costs 6 to 15 s here), so each point is still exercised."""
    points = list(KILL_POINTS)
    if not profile.short:
        return points
    return [points[SERVICES.index(service) % len(points)]]


def all_faults(profile: Profile) -> list[Fault]:
    short_pause, long_pause = profile.pauses
    return [
        NoFault(),
        *(KillService(service, _kill_points(service, profile)) for service in SERVICES),
        PauseBroker("broker-pause", short_pause),
        PauseBroker("broker-pause-long", long_pause),
        ProxyLatency(0.2),
        ProxyBlackhole(),
        ProxyReset(profile.reset_rounds),
        PoisonRecords(),
        Redeliver(),
        ReplayOutOfOrder(),
        Replicas(),
        KillDatabaseConnections(),
    ]
