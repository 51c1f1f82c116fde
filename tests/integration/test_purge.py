"""The purge agent across real processes, broker and PostgreSQL (issue 7, DESIGN.md
section 6): closed deals past retention go, their quotes first and the opportunity only
after every quote of it; nothing else is touched, and that holds when the quote service
is down, when two agents run, when the agent is killed mid-run, and when commands are
delivered twice.

The services run on a real clock, so the tests make deals "past retention" by setting
the policy's retention to 0 days ("purge as soon as closed"). The purge process of the
stack is restarted for this module with short answer timeouts, leases and backoffs (and
a schedule that does not fire), and put back as it was at the end. The other services'
tables are only read here, to check the archives.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dealflow_common.contracts.opportunity import OpportunityPurgeRequested
from dealflow_common.contracts.purge import PurgePolicySnapshot
from dealflow_common.contracts.topics import (
    OPPORTUNITY_COMMANDS,
    OPPORTUNITY_EVENTS,
    PURGE_EVENTS,
    QUOTE_COMMANDS,
    QUOTE_EVENTS,
)
from dealflow_common.runtime.processes import ServiceProcess
from dealflow_common.testing import ReadRecord, TopicReader, envelope_bytes

pytestmark = pytest.mark.integration

NEVER = "0 0 1 1 *"
"""A schedule that does not fire while the tests run (once a year): runs are asked for."""
FAST_AGENT = {
    "DEALFLOW_PURGE_ANSWER_TIMEOUT_SECONDS": "3",
    "DEALFLOW_PURGE_LEASE_SECONDS": "5",
    "DEALFLOW_PURGE_RETRY_BACKOFF_SECONDS": "1",
    "DEALFLOW_PURGE_RETRY_BACKOFF_MAX_SECONDS": "2",
    "DEALFLOW_PURGE_POLL_INTERVAL_MS": "100",
    "DEALFLOW_PURGE_TICK_SECONDS": "3600",
}
DEAL = {
    "title": "Fleet renewal",
    "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
    "value": {"amount": "50000.00", "currency": "USD"},
}
CLOSED = ("closed_won", "closed_lost")


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {timeout:.0f}s")
        await asyncio.sleep(0.1)


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


def document(value: Any) -> Any:
    """A JSONB column read with plain SQL (asyncpg gives its text)."""
    return orjson.loads(value) if isinstance(value, str) else value


async def restart(process: ServiceProcess, env: dict[str, str] | None = None) -> None:
    await process.stop()
    if env is not None:
        process.env = env
    await process.start()
    await process.wait_ready(timeout=90)


@pytest.fixture(scope="module")
async def fast_agent(stack, token) -> AsyncIterator[ServiceProcess]:
    """The stack's purge process, restarted with short timeouts; put back afterwards,
    with the policy it had."""
    process: ServiceProcess = stack.services["purge"]
    original = dict(process.env)
    operator = stack.client("purge", token("olga", ("operator",), ()))
    policy = (await operator.get("/purge/policy")).json()
    await operator.aclose()
    await restart(process, {**original, **FAST_AGENT})
    try:
        yield process
    finally:
        operator = stack.client("purge", token("olga", ("operator",), ()))
        policy.pop("version")
        await operator.put("/purge/policy", json=policy)
        await operator.aclose()
        await restart(process, original)


class Api:
    """Clients of every service (a rep and manager; an operator for /purge) and reads of
    the services' own tables (read only, to check the archives)."""

    def __init__(self, stack: Any, token: Callable[..., str], engine: AsyncEngine) -> None:
        self.stack = stack
        user = token("alice", ("rep", "manager"), ("emea",))
        self.opportunity = stack.client("opportunity", user)
        self.quote = stack.client("quote", user)
        self.order = stack.client("order", user)
        self.operator_token = token("olga", ("operator",), ())
        self.purge = stack.client("purge", self.operator_token)
        self.engine = engine

    async def close(self) -> None:
        for client in (self.opportunity, self.quote, self.order, self.purge):
            await client.aclose()

    def schema(self, service: str) -> str:
        return str(self.stack.services[service].env["DEALFLOW_DATABASE_SCHEMA"])

    async def rows(self, service: str, sql: str, **params: Any) -> list[Any]:
        """`sql` with `{s}` standing for the service's schema."""
        async with self.engine.connect() as connection:
            result = await connection.execute(text(sql.format(s=self.schema(service))), params)
            return list(result.all())

    # Deals and quotes, through the services' APIs.

    async def open_deal(self) -> str:
        response = await self.opportunity.post("/opportunities", json=DEAL)
        assert response.status_code == 201, response.text
        deal = str(response.json()["id"])
        for step in ("qualification", "proposal", "negotiation"):
            moved = await self.opportunity.post(
                f"/opportunities/{deal}/stage", json={"stage": step}
            )
            assert moved.status_code == 200, moved.text
        return deal

    async def quote_for(self, deal: str, present: bool = True) -> str:
        response = await self.quote.post(
            "/quotes",
            json={
                "opportunity_id": deal,
                "lines": [
                    {
                        "description": "Widget",
                        "quantity": "2",
                        "unit_price": {"amount": "100.00", "currency": "USD"},
                    }
                ],
            },
        )
        assert response.status_code == 201, response.text
        quote = str(response.json()["id"])
        if present:
            presented = await self.quote.post(f"/quotes/{quote}/present")
            assert presented.status_code == 200, presented.text
        return quote

    async def deal_with_quotes(self, count: int) -> tuple[str, list[str]]:
        deal = await self.open_deal()
        return deal, [await self.quote_for(deal) for _ in range(count)]

    async def lost_deal(self, quotes: int) -> tuple[str, list[str]]:
        deal, quote_ids = await self.deal_with_quotes(quotes)
        lost = await self.opportunity.post(f"/opportunities/{deal}/lose", json={"reason": "budget"})
        assert lost.status_code == 200, lost.text
        await self.quotes_closed(deal)
        return deal, quote_ids

    async def won_deal(self, quotes: int) -> tuple[str, list[str], str]:
        """A deal won through its first quote's acceptance: (deal, quotes, order)."""
        deal, quote_ids = await self.deal_with_quotes(quotes)
        accepted = await self.quote.post(f"/quotes/{quote_ids[0]}/accept")
        assert accepted.status_code == 202, accepted.text

        async def won_with_order() -> str | None:
            found = (await self.opportunity.get(f"/opportunities/{deal}")).json()
            return found["order_id"] if found["stage"] == "closed_won" else None

        order = await eventually(won_with_order)
        await self.quotes_closed(deal)
        return deal, quote_ids, str(order)

    async def quotes_closed(self, deal: str) -> None:
        """Until the saga is at rest: no quote of the closed deal is left open."""

        async def at_rest() -> bool:
            quotes = (await self.quote.get("/quotes", params={"opportunity_id": deal})).json()
            return all(q["status"] in ("accepted", "abandoned", "expired") for q in quotes)

        await eventually(at_rest)

    async def known_to_the_agent(self, deals: dict[str, list[str]]) -> None:
        """Until the purge service's projection knows each deal, closed if it is closed
        (the agent keeps no open stage but "open"), and every quote of it."""
        closed_stages = {"closed_won", "closed_lost"}

        async def known() -> bool:
            for deal, quotes in deals.items():
                actual = (await self.opportunity.get(f"/opportunities/{deal}")).json()["stage"]
                stage = await self.rows(
                    "purge", "SELECT stage FROM {s}.known_deals WHERE opportunity_id = :d", d=deal
                )
                seen = await self.rows(
                    "purge",
                    "SELECT quote_id FROM {s}.known_quotes WHERE opportunity_id = :d",
                    d=deal,
                )
                if not stage or (stage[0][0] in closed_stages) != (actual in closed_stages):
                    return False
                if {str(q) for (q,) in seen} != set(quotes):
                    return False
            return True

        await eventually(known)

    # The agent, through its operators' API.

    async def policy(
        self, *, won: int = 0, lost: int = 0, batch_size: int = 100, schedule: str = NEVER
    ) -> None:
        changed = await self.purge.put(
            "/purge/policy",
            json={
                "retention_days_won": won,
                "retention_days_lost": lost,
                "batch_size": batch_size,
                "schedule": schedule,
            },
        )
        assert changed.status_code == 200, changed.text

    async def start_run(self, client: httpx.AsyncClient | None = None, **body: Any) -> str:
        """A new run's id (waiting for a run going to finish first)."""
        client = client or self.purge

        async def started() -> str | None:
            response = await client.post("/purge/runs", json=body)
            assert response.status_code in (200, 202), response.text
            return str(response.json()["id"]) if response.status_code == 202 else None

        result: str = await eventually(started, timeout=60)
        return result

    async def finished(self, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            run = (await self.purge.get(f"/purge/runs/{run_id}")).json()
            return run if run["finished_at"] else None

        result: dict[str, Any] = await eventually(done, timeout)
        return result

    async def run(self, **body: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Run the agent now, to its end: (the run, its items by deal)."""
        run = await self.finished(await self.start_run(**body))
        return run, await self.items(run["id"])

    async def items(self, run_id: str) -> dict[str, dict[str, Any]]:
        items = (await self.purge.get(f"/purge/runs/{run_id}/items")).json()
        return {i["opportunity_id"]: i for i in items}

    # What the services hold.

    async def exists(self, deal: str, quotes: Iterable[str]) -> dict[str, int]:
        """HTTP status of the deal's GET and of each quote's GET."""
        found = {deal: (await self.opportunity.get(f"/opportunities/{deal}")).status_code}
        for quote in quotes:
            found[quote] = (await self.quote.get(f"/quotes/{quote}")).status_code
        return found

    async def archived(self, deal: str) -> tuple[list[Any], list[Any]]:
        """(quote archive rows, opportunity archive rows) of the deal."""
        quotes = await self.rows(
            "quote",
            "SELECT quote_id, run_id, purged_at, quote FROM {s}.quote_archive "
            "WHERE opportunity_id = :d",
            d=deal,
        )
        opportunity = await self.rows(
            "opportunity",
            "SELECT opportunity_id, run_id, purged_at, stage, opportunity "
            "FROM {s}.opportunity_archive WHERE opportunity_id = :d",
            d=deal,
        )
        return quotes, opportunity

    async def assert_purged(self, deal: str, quotes: list[str], stage: str) -> None:
        """Gone from both services, archived once each, the quotes before the deal."""
        assert set((await self.exists(deal, quotes)).values()) == {404}
        archived_quotes, archived_deal = await self.archived(deal)
        assert sorted(str(r.quote_id) for r in archived_quotes) == sorted(quotes)
        assert [r.stage for r in archived_deal] == [stage]
        assert all(len(document(r.quote)["lines"]) == 1 for r in archived_quotes), "with lines"
        assert archived_deal[0].purged_at >= max(r.purged_at for r in archived_quotes), (
            "the opportunity is archived and deleted after all its quotes"
        )

    async def idle(self) -> None:
        """Until no run is going (one a test before may have left to finish)."""

        async def no_run() -> bool:
            status = (await self.purge.get("/purge/status")).json()
            return status["running_run"] is None

        await eventually(no_run, timeout=60)

    async def assert_untouched(self, deal: str, quotes: list[str]) -> None:
        assert set((await self.exists(deal, quotes)).values()) == {200}
        assert await self.archived(deal) == ([], [])


@pytest.fixture
async def api(stack, fast_agent, token, database_url) -> AsyncIterator[Api]:
    engine = create_async_engine(database_url)
    client = Api(stack, token, engine)
    try:
        await client.idle()
        yield client
    finally:
        await client.close()
        await engine.dispose()


async def read_all(stack: Any, *topics: str, until: Callable[[TopicReader], bool]) -> TopicReader:
    async with TopicReader(stack.kafka.bootstrap_servers, *topics) as reader:
        await reader.wait_for(lambda _: until(reader))
        await reader.settle(1.0)
    return reader


def purge_events(reader: TopicReader, deal: str) -> tuple[list[dict[str, Any]], ...]:
    """The deal's quote.purged, quote.purge_completed and opportunity.purged, in order."""
    of = [r.event for r in reader.of(deal)]
    return (
        [e for e in of if e["type"] == "quote.purged"],
        [e for e in of if e["type"] == "quote.purge_completed"],
        [e for e in of if e["type"] == "opportunity.purged"],
    )


def opportunity_purged(reader: TopicReader, deal: str) -> bool:
    return bool(purge_events(reader, deal)[2])


def assert_quotes_first(reader: TopicReader, deal: str, quotes: list[str]) -> None:
    """On the topics: quote.purged per quote, then quote.purge_completed, then (on the
    opportunity topic, later in time) opportunity.purged; each quote purged once."""
    quote_topic = [
        r.event["type"]
        for r in reader.of(deal)
        if r.topic == QUOTE_EVENTS and r.event["type"].startswith("quote.purge")
    ]
    purged, completed, deal_purged = purge_events(reader, deal)
    assert quote_topic[: len(quotes) + 1] == ["quote.purged"] * len(quotes) + [
        "quote.purge_completed"
    ], quote_topic
    assert sorted(e["data"]["quote_id"] for e in purged) == sorted(quotes), "each quote once"
    first = completed[0]["data"]
    assert (first["count"], first["remaining"]) == (len(quotes), 0)
    # A request delivered again finds nothing left: it answers with a count of 0.
    assert [e["data"]["count"] for e in completed[1:]] == [0] * (len(completed) - 1)
    assert deal_purged, "opportunity.purged"
    assert {e["data"]["purged_at"] for e in deal_purged} == {deal_purged[0]["data"]["purged_at"]}
    assert moment(deal_purged[0]["data"]["purged_at"]) >= moment(first["completed_at"])


# 1. Eligible deals go with all their quotes; the others stay.


async def test_won_and_lost_deals_past_retention_are_purged_and_no_other(stack, api) -> None:
    won, won_quotes, order = await api.won_deal(quotes=2)
    lost, lost_quotes = await api.lost_deal(quotes=2)
    open_deal, open_quotes = await api.deal_with_quotes(1)
    held, held_quotes = await api.lost_deal(quotes=1)
    await api.known_to_the_agent(
        {won: won_quotes, lost: lost_quotes, open_deal: open_quotes, held: held_quotes}
    )
    placed = await api.purge.post(
        "/purge/holds", json={"opportunity_id": held, "reason": "litigation"}
    )
    assert placed.status_code == 201, placed.text

    # Won deals kept a day, lost ones not at all: the won deal is within retention.
    await api.policy(won=1, lost=0)
    first, items = await api.run()
    assert items[lost]["outcome"] == "purged"
    assert items[lost]["quotes_purged"] == 2
    assert items[held]["outcome"] == "skipped"
    assert items[held]["reason"] == "on_hold"
    assert won not in items, "within retention: not even examined"
    assert open_deal not in items
    await api.assert_purged(lost, lost_quotes, "closed_lost")
    for deal, quotes in ((won, won_quotes), (open_deal, open_quotes), (held, held_quotes)):
        await api.assert_untouched(deal, quotes)

    # Now won deals are past retention too.
    await api.policy(won=0, lost=0)
    second, items = await api.run()
    assert items[won]["outcome"] == "purged"
    assert items[held]["outcome"] == "skipped"
    await api.assert_purged(won, won_quotes, "closed_won")
    await api.assert_untouched(open_deal, open_quotes)
    await api.assert_untouched(held, held_quotes)

    orders = (await api.order.get(f"/opportunities/{won}/orders")).json()
    assert [o["id"] for o in orders] == [order], "orders are kept"
    assert (await api.order.get(f"/orders/{order}")).status_code == 200

    quotes_archived, deal_archived = await api.archived(won)
    assert {str(r.run_id) for r in quotes_archived} == {second["id"]}
    assert str(deal_archived[0].run_id) == second["id"]
    assert {document(q.quote)["status"] for q in quotes_archived} == {"accepted", "abandoned"}
    assert document(deal_archived[0].opportunity)["won_quote_id"] == won_quotes[0]
    assert {str(r.run_id) for r in (await api.archived(lost))[0]} == {first["id"]}

    reader = await read_all(
        stack,
        QUOTE_EVENTS,
        OPPORTUNITY_EVENTS,
        until=lambda r: opportunity_purged(r, won) and opportunity_purged(r, lost),
    )
    assert_quotes_first(reader, won, won_quotes)
    assert_quotes_first(reader, lost, lost_quotes)
    for deal in (open_deal, held):
        assert purge_events(reader, deal) == ([], [], [])

    status = (await api.purge.get("/purge/status")).json()
    assert held not in {s["opportunity_id"] for s in status["stuck"]}
    assert (await api.purge.delete(f"/purge/holds/{held}")).status_code == 204


# 2. Quotes first, also when the quote service is down.


async def test_the_opportunity_service_refuses_a_deal_whose_quotes_are_left(stack, api) -> None:
    """Whoever asks: a closed deal with a quote left is not purged."""
    deal, quotes = await api.lost_deal(quotes=1)

    async def counted_by_the_opportunity_service() -> bool:
        return bool(
            await api.rows(
                "opportunity",
                "SELECT 1 FROM {s}.quote_presence WHERE opportunity_id = :d AND purged_at IS NULL",
                d=deal,
            )
        )

    await eventually(counted_by_the_opportunity_service)
    # A hold is placed on a deal the agent knows: its projection is a background
    # consumer, and may learn of the deal a moment after the opportunity service.
    await api.known_to_the_agent({deal: quotes})
    placed = await api.purge.post(
        "/purge/holds", json={"opportunity_id": deal, "reason": "this test"}
    )
    assert placed.status_code == 201, placed.text
    request = OpportunityPurgeRequested(
        opportunity_id=uuid.UUID(deal),
        run_id=uuid.uuid4(),
        policy=PurgePolicySnapshot(version=1, retention_days_won=0, retention_days_lost=0),
        quotes_purged=0,
        requested_at=datetime.now().astimezone(),
    )
    event_id = uuid.uuid4()
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            OPPORTUNITY_COMMANDS,
            envelope_bytes(request, source="/dealflow/purge", event_id=event_id),
            key=deal.encode(),
        )
    finally:
        await producer.stop()

    async def consumed() -> bool:
        return bool(
            await api.rows("opportunity", "SELECT 1 FROM {s}.inbox WHERE event_id = :e", e=event_id)
        )

    await eventually(consumed)
    await api.assert_untouched(deal, quotes)
    assert (await api.purge.delete(f"/purge/holds/{deal}")).status_code == 204


async def test_quote_service_down_the_deal_is_reported_stuck_and_finished_later(stack, api) -> None:
    deal, quotes = await api.lost_deal(quotes=2)
    await api.known_to_the_agent({deal: quotes})
    await api.policy(won=0, lost=0)
    quote_service: ServiceProcess = stack.services["quote"]
    quote_service.kill()
    await quote_service.wait_killed()
    try:
        run, items = await api.run()
        assert run["status"] == "failed"
        assert run["failed"] >= 1
        assert items[deal]["outcome"] == "failed"
        assert "quote service" in items[deal]["reason"]
        status = (await api.purge.get("/purge/status")).json()
        stuck = {s["opportunity_id"]: s for s in status["stuck"]}
        assert stuck[deal]["failed_step"] == "quotes"
        assert stuck[deal]["attempts"] >= 1
        assert (await api.opportunity.get(f"/opportunities/{deal}")).status_code == 200
        assert await api.archived(deal) == ([], [])
    finally:
        await quote_service.start()
        await quote_service.wait_ready(timeout=90)

    # The request waiting on the command topic is answered now, and a later run takes
    # the deal up from where it failed; either way it ends purged, quotes first.
    async def purged() -> bool:
        if (await api.opportunity.get(f"/opportunities/{deal}")).status_code == 404:
            return True
        status = (await api.purge.get("/purge/status")).json()
        if status["running_run"] is None:
            await api.purge.post("/purge/runs", json={})
        return False

    await eventually(purged, timeout=60)
    await api.assert_purged(deal, quotes, "closed_lost")
    reader = await read_all(
        stack,
        QUOTE_EVENTS,
        OPPORTUNITY_EVENTS,
        PURGE_EVENTS,
        OPPORTUNITY_COMMANDS,
        until=lambda r: opportunity_purged(r, deal),
    )
    assert_quotes_first(reader, deal, quotes)
    failed = [r.event for r in reader.records if r.event.get("type") == "purge.opportunity_failed"]
    assert any(e["data"]["opportunity_id"] == deal for e in failed), "the failure is published"
    requested = [r for r in reader.of(deal) if r.event["type"] == "opportunity.purge_requested"]
    completed = purge_events(reader, deal)[1]
    assert requested, "the opportunity was asked for once the quotes were purged"
    assert moment(requested[0].event["data"]["requested_at"]) >= moment(
        completed[0]["data"]["completed_at"]
    ), "never asked for while the quote service had not purged the quotes"


# 3. A dry run lists what would go and changes nothing.

RUN_BOOKKEEPING = {"purge_runs", "purge_run_items", "outbox", "event_sequence"}
"""What a dry run writes: itself, its items and its purge.run_* events."""
MESSAGING = {"outbox", "inbox", "event_sequence"}


async def table_counts(api: Api) -> dict[str, int]:
    counts = {}
    for service in ("opportunity", "quote", "order", "purge"):
        tables = await api.rows(
            service,
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = :schema AND table_name <> 'alembic_version'",
            schema=api.schema(service),
        )
        for (table,) in tables:
            if table in MESSAGING or (service == "purge" and table in RUN_BOOKKEEPING):
                continue
            (count,) = await api.rows(service, f'SELECT count(*) FROM {{s}}."{table}"')
            counts[f"{service}.{table}"] = count[0]
    return counts


async def test_a_dry_run_lists_what_would_go_and_changes_nothing(stack, api) -> None:
    lost, lost_quotes = await api.lost_deal(quotes=2)
    open_deal, open_quotes = await api.deal_with_quotes(1)
    await api.known_to_the_agent({lost: lost_quotes, open_deal: open_quotes})
    await api.policy(won=0, lost=0)

    async with TopicReader(
        stack.kafka.bootstrap_servers, QUOTE_COMMANDS, OPPORTUNITY_COMMANDS
    ) as commands:
        await commands.settle(1.0)
        before_commands = len(commands.records)
        before = await table_counts(api)
        run, items = await api.run(dry_run=True)
        after = await table_counts(api)
        await commands.settle(1.0)

    assert run["dry_run"] is True
    assert run["status"] == "succeeded"
    assert items[lost]["outcome"] == "would_purge"
    assert open_deal not in items
    assert run["would_purge"] >= 1
    assert run["purged"] == 0
    assert after == before, "a dry run writes nothing but itself"
    assert len(commands.records) == before_commands, "and sends no command"
    await api.assert_untouched(lost, lost_quotes)
    await api.assert_untouched(open_deal, open_quotes)

    # What it listed is what a real run purges.
    _, items = await api.run()
    assert items[lost]["outcome"] == "purged"
    await api.assert_purged(lost, lost_quotes, "closed_lost")


# 4. Two agents started together never run at once.


async def test_two_agents_asked_together_never_run_at_once(stack, api, fast_agent) -> None:
    schema = api.schema("purge")
    second = stack.service_process("purge", schema=schema)
    second.env.update(FAST_AGENT)
    await second.start()
    other = httpx.AsyncClient(
        base_url=second.url, headers={"Authorization": f"Bearer {api.operator_token}"}, timeout=30
    )
    try:
        await second.wait_ready(timeout=90)
        deals = dict([await api.lost_deal(quotes=1) for _ in range(3)])
        await api.known_to_the_agent(deals)
        await api.policy(won=0, lost=0)
        begin = datetime.now().astimezone()

        # Several rounds of both asking at the same moment.
        answers = []
        for _ in range(4):
            answers.append(
                await asyncio.gather(
                    api.purge.post("/purge/runs", json={}), other.post("/purge/runs", json={})
                )
            )
            await asyncio.sleep(0.3)
        for pair in answers:
            codes = sorted(a.status_code for a in pair)
            assert codes in ([200, 202], [202, 202], [200, 200]), [a.text for a in pair]
            if codes == [200, 202]:
                assert pair[0].json()["id"] == pair[1].json()["id"], "answered with the running one"
        first = answers[0]
        assert sorted(a.status_code for a in first) == [200, 202], "one runs, one answers with it"

        async def all_finished() -> list[dict[str, Any]] | None:
            runs = (await api.purge.get("/purge/runs", params={"limit": 50})).json()
            ours = [r for r in runs if moment(r["started_at"]) >= begin]
            return ours if all(r["finished_at"] for r in ours) else None

        runs = sorted(await eventually(all_finished, timeout=60), key=lambda r: r["started_at"])
        started = {a.json()["id"] for pair in answers for a in pair}
        assert {r["id"] for r in runs} == started
        for earlier, later in itertools.pairwise(runs):
            assert moment(later["started_at"]) >= moment(earlier["finished_at"]), (
                f"runs {earlier['id']} and {later['id']} overlap"
            )
        assert all(r["status"] != "interrupted" for r in runs)
        for deal, quotes in deals.items():
            await api.assert_purged(deal, quotes, "closed_lost")
    finally:
        await other.aclose()
        await second.stop()


# 5. Killing the agent mid-run leaves nothing half-purged after the next run.


async def test_the_agent_killed_mid_run_leaves_nothing_half_purged(stack, api, fast_agent) -> None:
    deals = dict([await api.lost_deal(quotes=2) for _ in range(6)])
    await api.known_to_the_agent(deals)
    await api.policy(won=0, lost=0, batch_size=1)
    killed_run = await api.start_run()

    async def under_way() -> bool:
        items = await api.items(killed_run)
        return any(d in items for d in deals)

    await eventually(under_way, timeout=30)
    fast_agent.kill()
    await fast_agent.wait_killed()
    await fast_agent.start()
    await fast_agent.wait_ready(timeout=90)

    # The killed run holds the lock until its lease runs out; then a run takes over.
    async def every_deal_purged() -> bool:
        for deal in deals:
            if (await api.opportunity.get(f"/opportunities/{deal}")).status_code != 404:
                status = (await api.purge.get("/purge/status")).json()
                if status["running_run"] is None:
                    await api.purge.post("/purge/runs", json={})
                return False
        return True

    await eventually(every_deal_purged, timeout=90)
    killed = (await api.purge.get(f"/purge/runs/{killed_run}")).json()
    assert killed["status"] == "interrupted", killed
    for deal, quotes in deals.items():
        await api.assert_purged(deal, quotes, "closed_lost")
    reader = await read_all(
        stack,
        QUOTE_EVENTS,
        OPPORTUNITY_EVENTS,
        until=lambda r: all(opportunity_purged(r, d) for d in deals),
    )
    for deal, quotes in deals.items():
        assert_quotes_first(reader, deal, quotes)
    await api.policy(won=0, lost=0, batch_size=100)


# 6. Commands delivered twice purge once.


async def consumed(api: Api, service: str, outcome: str, event_type: str | None = None) -> float:
    """How many events the service's consumers counted with that outcome (and type)."""
    metrics = (await getattr(api, service).get("/metrics")).text
    total = 0.0
    for line in metrics.splitlines():
        if (
            line.startswith("dealflow_events_consumed_total{")
            and f'outcome="{outcome}"' in line
            and (event_type is None or f'type="{event_type}"' in line)
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def consumed_as(api: Api, service: str, event_type: str, outcome: str) -> Callable[..., Any]:
    async def value() -> float:
        return await consumed(api, service, outcome, event_type)

    return value


async def dead_lettered(api: Api, service: str) -> float:
    return await consumed(api, service, "dead_lettered")


def with_new_id(record: ReadRecord) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The same command, sent again by a sender that lost track: a new event id."""
    event = orjson.loads(record.value)
    event["id"] = str(uuid.uuid4())
    headers = {**record.headers, "ce_id": event["id"].encode()}
    return orjson.dumps(event), list(headers.items())


async def test_commands_delivered_twice_purge_once(stack, api) -> None:
    deal, quotes = await api.lost_deal(quotes=2)
    await api.known_to_the_agent({deal: quotes})
    await api.policy(won=0, lost=0)
    _, items = await api.run()
    assert items[deal]["outcome"] == "purged"
    await api.assert_purged(deal, quotes, "closed_lost")
    archived_before = await api.archived(deal)

    topics = (QUOTE_COMMANDS, OPPORTUNITY_COMMANDS, QUOTE_EVENTS, OPPORTUNITY_EVENTS)
    reader = await read_all(stack, *topics, until=lambda r: opportunity_purged(r, deal))
    commands = [
        r
        for r in reader.of(deal)
        if r.event["type"] in ("quote.purge_requested", "opportunity.purge_requested")
    ]
    assert sorted(r.event["type"] for r in commands) == [
        "opportunity.purge_requested",
        "quote.purge_requested",
    ]
    answers_before = len(reader.of(deal))
    duplicates = {
        "quote": consumed_as(api, "quote", "quote.purge_requested", "duplicate"),
        "opportunity": consumed_as(api, "opportunity", "opportunity.purge_requested", "duplicate"),
    }
    applied = {
        "quote": consumed_as(api, "quote", "quote.purge_requested", "applied"),
        "opportunity": consumed_as(api, "opportunity", "opportunity.purge_requested", "applied"),
    }
    seen_duplicates = {k: await v() for k, v in duplicates.items()}
    seen_dead = {s: await dead_lettered(api, s) for s in ("quote", "opportunity", "purge")}
    seen_applied = {k: await v() for k, v in applied.items()}

    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap_servers)
    await producer.start()
    try:
        # The very records again (a redelivery), then each with a new id (a re-send).
        for record in commands:
            await producer.send_and_wait(
                record.topic, record.value, key=record.key, headers=list(record.headers.items())
            )
        for record in commands:
            value, headers = with_new_id(record)
            await producer.send_and_wait(record.topic, value, key=record.key, headers=headers)
    finally:
        await producer.stop()

    async def all_consumed() -> bool:
        for service in ("quote", "opportunity"):
            if await duplicates[service]() < seen_duplicates[service] + 1:
                return False
            if await applied[service]() < seen_applied[service] + 1:
                return False
        return True

    await eventually(all_consumed, timeout=30)

    # The re-sent commands are answered from what is left: no quote, the archived deal.
    def answered(r: TopicReader) -> bool:
        _, completed, deal_purged = purge_events(r, deal)
        return len(completed) >= 2 and len(deal_purged) >= 2

    again = await read_all(stack, *topics, until=answered)
    purged, completed, deal_purged = purge_events(again, deal)
    assert sorted(e["data"]["quote_id"] for e in purged) == sorted(quotes), "no second purge"
    assert [e["data"]["count"] for e in completed] == [2, 0]
    assert len(deal_purged) == 2
    assert deal_purged[1]["data"]["purged_at"] == deal_purged[0]["data"]["purged_at"]
    assert len(again.of(deal)) == answers_before + 4 + 2, "the re-sends, and one answer each"
    assert await api.archived(deal) == archived_before, "no archive row added or changed"
    for service in ("quote", "opportunity", "purge"):
        assert await dead_lettered(api, service) == seen_dead[service], "nothing dead-lettered"
    status = (await api.purge.get("/purge/status")).json()
    assert deal not in {s["opportunity_id"] for s in status["stuck"]}
    items_after = await api.items((await api.purge.get("/purge/runs")).json()[0]["id"])
    assert items_after.get(deal, {"outcome": "purged"})["outcome"] == "purged"
