"""A stalled broker stops publishing, not writing: requests go on while it is away,
readiness says so in bounded time, and everything written reaches Kafka afterwards.

Run on SQLite, the `make run` default, where a relay that held its write transaction
across the Kafka wait used to lock every writer out for as long as the broker hung.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from dealflow_common.contracts.topics import OPPORTUNITY_EVENTS
from dealflow_common.runtime.broker import EmbeddedBroker, free_port
from dealflow_common.testing import TopicReader

pytestmark = pytest.mark.integration

DEAL = {
    "title": "Written while the broker sleeps",
    "customer": {"kind": "organization", "id": "acme", "name": "ACME Corp"},
    "value": {"amount": "1000.00", "currency": "EUR"},
}


async def test_writes_go_on_and_readiness_answers_while_the_broker_is_stalled(
    stack, token, tmp_path: Path
) -> None:
    broker = EmbeddedBroker("127.0.0.1", free_port())
    broker.start()
    service = stack.service_process(
        "opportunity", schema="unused", bootstrap=broker.bootstrap_servers
    )
    service.env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'opportunity.db'}"
    service.env["DEALFLOW_OUTBOX_PUBLISH_TIMEOUT_MS"] = "2000"
    service.env["DEALFLOW_KAFKA_REQUEST_TIMEOUT_MS"] = "2000"
    paused = False
    try:
        await service.start()
        await service.wait_ready()
        async with httpx.AsyncClient(
            base_url=service.url, timeout=30, headers={"Authorization": f"Bearer {token('alice')}"}
        ) as api:
            first = await api.post("/opportunities", json=DEAL)
            assert first.status_code == 201, first.text

            os.kill(broker.pid, signal.SIGSTOP)
            paused = True
            written: list[str] = []
            slowest = 0.0
            # Keep writing for longer than a publish timeout, so the relay is waiting
            # on the stalled broker at some point of every request.
            deadline = time.monotonic() + 6.0
            while time.monotonic() < deadline:
                started = time.monotonic()
                created = await api.post("/opportunities", json=DEAL)
                slowest = max(slowest, time.monotonic() - started)
                assert created.status_code == 201, created.text
                written.append(str(created.json()["id"]))
                await asyncio.sleep(0.2)
            # Not a timing assertion on speed: a request that waited for the broker
            # would have taken the whole publish timeout (2 s) or the busy timeout.
            assert slowest < 1.5, f"a write waited {slowest:.1f}s on the stalled broker"

            started = time.monotonic()
            ready = await api.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert time.monotonic() - started < 5.0, "readiness must answer, not hang"

            os.kill(broker.pid, signal.SIGCONT)
            paused = False
            async with TopicReader(broker.bootstrap_servers, OPPORTUNITY_EVENTS) as reader:
                await reader.wait_for(
                    lambda _: all(reader.of(deal) for deal in written), timeout=60
                )
            await service.wait_ready(timeout=30)
    finally:
        if paused:
            os.kill(broker.pid, signal.SIGCONT)
        await service.stop()
        broker.stop()
