"""A service killed after its commit and before publishing loses no event: the outbox
keeps what was committed and the relay sends it after the restart."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS
from dealflow_common.runtime.broker import EmbeddedBroker, free_port
from dealflow_common.testing import TopicReader, new_schema_name

pytestmark = pytest.mark.integration

DEAL = {
    "title": "Crash-proof deal",
    "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
    "value": {"amount": "1000.00", "currency": "EUR"},
}


async def outbox_rows(database_url: str, schema: str, subject: str) -> list[tuple[str, bool]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    f'SELECT event_id, sent_at IS NOT NULL FROM "{schema}".outbox '
                    "WHERE subject = :s ORDER BY id"
                ),
                {"s": subject},
            )
            return [(str(event_id), sent) for event_id, sent in rows]
    finally:
        await engine.dispose()


async def make_changes(url: str, token: str) -> str:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as api:
        created = await api.post("/opportunities", json=DEAL)
        assert created.status_code == 201, created.text
        deal = str(created.json()["id"])
        for stage in ("qualification", "proposal"):
            moved = await api.post(f"/opportunities/{deal}/stage", json={"stage": stage})
            assert moved.status_code == 200, moved.text
        return deal


async def test_events_committed_while_the_broker_was_unreachable_survive_a_kill(
    stack, schemas, token
) -> None:
    schema = new_schema_name("opportunity")
    schemas.append(schema)
    unreachable = f"127.0.0.1:{free_port()}"
    offline = stack.service_process("opportunity", schema=schema, bootstrap=unreachable)
    await offline.start()
    await offline.wait_alive()
    deal = await make_changes(offline.url, token("alice"))

    committed = await outbox_rows(stack.database_url, schema, deal)
    assert [sent for _, sent in committed] == [False, False, False]
    offline.kill()
    await offline.wait_killed()

    online = stack.service_process("opportunity", schema=schema)
    await online.start()
    try:
        await online.wait_ready()
        async with TopicReader(stack.kafka.bootstrap_servers, OPPORTUNITY_EVENTS) as reader:
            await reader.wait_for(lambda _: len(reader.of(deal)) >= 3)
            await reader.settle()
    finally:
        await online.stop()

    events = reader.of(deal)
    assert [r.event["id"] for r in events] == [event_id for event_id, _ in committed]
    assert [r.event["sequence"] for r in events] == [1, 2, 3]
    assert [sent for _, sent in await outbox_rows(stack.database_url, schema, deal)] == [True] * 3


async def test_a_kill_while_the_broker_hangs_mid_publish_loses_nothing(
    stack, schemas, token
) -> None:
    """The broker is paused (SIGSTOP, a faithful outage) while the relay is sending; the
    service is killed; the broker resumes. A record may then arrive twice (the relay
    cannot know the broker took it), but always as the same event, and none is missing."""
    broker = EmbeddedBroker("127.0.0.1", free_port())
    broker.start()
    schema = new_schema_name("opportunity")
    schemas.append(schema)
    first = stack.service_process("opportunity", schema=schema, bootstrap=broker.bootstrap_servers)
    try:
        await first.start()
        await first.wait_ready()
        async with httpx.AsyncClient(
            base_url=first.url, timeout=30, headers={"Authorization": f"Bearer {token('alice')}"}
        ) as api:
            deal = str((await api.post("/opportunities", json=DEAL)).json()["id"])
            for _ in range(100):
                if all(sent for _, sent in await outbox_rows(stack.database_url, schema, deal)):
                    break
                await asyncio.sleep(0.1)
            os.kill(broker.pid, signal.SIGSTOP)
            for stage in ("qualification", "proposal"):
                moved = await api.post(f"/opportunities/{deal}/stage", json={"stage": stage})
                assert moved.status_code == 200, moved.text
        await asyncio.sleep(1.0)  # the relay is now waiting on the paused broker
        at_kill = [sent for _, sent in await outbox_rows(stack.database_url, schema, deal)]
        assert at_kill == [True, False, False], "the moves should still await their ack"
        first.kill()
        await first.wait_killed()
        os.kill(broker.pid, signal.SIGCONT)

        second = stack.service_process(
            "opportunity", schema=schema, bootstrap=broker.bootstrap_servers
        )
        await second.start()
        try:
            await second.wait_ready()
            async with TopicReader(broker.bootstrap_servers, OPPORTUNITY_EVENTS) as reader:
                await reader.wait_for(
                    lambda _: {r.event["sequence"] for r in reader.of(deal)} >= {1, 2, 3}
                )
                await reader.settle(3.0)
        finally:
            await second.stop()
    finally:
        first.kill()
        broker.stop()

    events = reader.of(deal)
    committed = [event_id for event_id, _ in await outbox_rows(stack.database_url, schema, deal)]
    assert {r.event["id"] for r in events} == set(committed)
    copies = Counter(r.event["id"] for r in events)
    by_id = {r.event["id"]: r.event["sequence"] for r in events}
    assert all(by_id[event_id] == n + 1 for n, event_id in enumerate(committed))
    assert all(count <= 2 for count in copies.values())
    first_seen = list(dict.fromkeys(r.event["sequence"] for r in events))
    assert first_seen == [1, 2, 3]
