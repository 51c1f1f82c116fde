"""The purge journal: with the policy's `journal` flag on, a real run writes one JSON
line per deal it purged, skipped or failed; with it off, or in a dry run, none."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from dealflow_common.contracts.opportunity import Stage
from dealflow_purge.adapters.journal import JournalDirectory
from dealflow_purge.adapters.schedule import CrontabSchedule
from dealflow_purge.application.agent import PurgeAgent
from dealflow_purge.application.metrics import PurgeMetrics
from dealflow_purge.application.unit_of_work import PurgeUnitOfWork
from dealflow_purge.bootstrap import agent_config

from .conftest import OPERATOR
from .test_run import opportunity_purged, quotes_purged

POLICY = {
    "retention_days_won": 30,
    "retention_days_lost": 30,
    "batch_size": 100,
    "schedule": "0 * * * *",
}


def journal_dir(agent) -> Path:
    directory = agent.platform.settings.purge_journal_dir
    assert directory is not None
    return Path(directory)


def journal_lines(agent, run_id: str) -> list[dict[str, Any]]:
    path = journal_dir(agent) / f"purge-run-{run_id}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def set_journal(agent, on: bool) -> None:
    body = {**POLICY, "journal": on}
    response = await agent.call("PUT", "/purge/policy", body, **OPERATOR)
    assert response.status_code == 200, response.text
    assert response.json()["journal"] is on


async def test_a_run_with_the_journal_on_writes_a_line_per_deal(agent) -> None:
    await set_journal(agent, True)
    purged, quotes = await agent.deal(Stage.CLOSED_WON, 40, quotes=2)
    held, _ = await agent.deal(Stage.CLOSED_LOST, 90)
    silent, _ = await agent.deal(Stage.CLOSED_LOST, 50, quotes=1)
    hold = {"opportunity_id": str(held), "reason": "litigation"}
    assert (await agent.call("POST", "/purge/holds", hold, **OPERATOR)).status_code == 201

    dry = (await agent.call("POST", "/purge/runs", {"dry_run": True}, **OPERATOR)).json()["id"]
    await agent.run_until(dry, lambda r: r["finished_at"] is not None)
    assert not (journal_dir(agent) / f"purge-run-{dry}.jsonl").exists()

    run_id = (await agent.call("POST", "/purge/runs", {}, **OPERATOR)).json()["id"]
    run = await agent.run_until(run_id, lambda r: r["examined"] == 3)
    assert (run["planned"], run["in_progress"], run["skipped"]) == (3, 2, 1)
    await quotes_purged(agent, purged, quotes, run_id)
    await opportunity_purged(agent, purged, run_id)
    agent.clock.advance(seconds=61)  # the quote service never answers for `silent`
    run = await agent.run_until(run_id, lambda r: r["finished_at"] is not None)
    assert (run["status"], run["purged"], run["skipped"], run["failed"]) == ("failed", 1, 1, 1)
    assert run["error"] is None  # the journal was written

    lines = journal_lines(agent, run_id)
    by_deal = {line["opportunity_id"]: line for line in lines}
    assert len(lines) == 3
    assert set(by_deal) == {str(purged), str(held), str(silent)}
    assert {line["run_id"] for line in lines} == {run_id}
    assert (by_deal[str(purged)]["outcome"], by_deal[str(purged)]["quotes_purged"]) == (
        "purged",
        2,
    )
    assert by_deal[str(purged)]["reason"] is None
    assert (by_deal[str(held)]["outcome"], by_deal[str(held)]["reason"]) == ("skipped", "on_hold")
    assert by_deal[str(silent)]["outcome"] == "failed"
    assert by_deal[str(silent)]["reason"].startswith("no answer from the quote service")
    for line in lines:
        closed_at = datetime.fromisoformat(line["closed_at"])
        assert agent.clock() - closed_at > timedelta(days=30)
        assert datetime.fromisoformat(line["at"]) <= agent.clock()

    # Off again: the next run (which retries `silent`) writes no journal.
    await set_journal(agent, False)
    agent.clock.advance(seconds=61)  # past the failed deal's backoff
    second = (await agent.call("POST", "/purge/runs", {}, **OPERATOR)).json()["id"]
    run = await agent.run_until(second, lambda r: r["examined"] >= 1)
    assert run["planned"] == 2  # the failed deal due its retry; the held one, skipped again
    agent.clock.advance(seconds=61)  # still no answer
    run = await agent.run_until(second, lambda r: r["finished_at"] is not None)
    assert (run["examined"], run["skipped"], run["failed"]) == (2, 1, 1)
    assert not (journal_dir(agent) / f"purge-run-{second}.jsonl").exists()


async def test_an_interrupted_run_gets_its_journal_from_the_run_that_takes_over(agent) -> None:
    """A run whose process stops mid-run: the next run marks it interrupted and writes its
    journal, its deal still under way listed as such."""
    await set_journal(agent, True)
    deal, _ = await agent.deal(Stage.CLOSED_WON, 70, quotes=1)
    settings = agent.platform.settings
    stopped = PurgeAgent(
        lambda: PurgeUnitOfWork(agent.engine, agent.platform.outbox, agent.clock),
        CrontabSchedule(),
        agent_config(settings),
        PurgeMetrics(CollectorRegistry()),
        JournalDirectory(journal_dir(agent)),
    )
    run, started = await stopped.request_run(trigger="operator", dry_run=False, by="olga")
    assert started
    going = asyncio.create_task(stopped.execute(run.id))
    await agent.run_until(str(run.id), lambda r: r["in_progress"] == 1)
    going.cancel()  # its process stops: the lease is kept until it runs out
    with contextlib.suppress(asyncio.CancelledError):
        await going
    assert not (journal_dir(agent) / f"purge-run-{run.id}.jsonl").exists()

    agent.clock.advance(seconds=settings.purge_lease_seconds + 1)
    # The stopped run is a task of this process, not a process of its own: on SQLite its
    # cancelled transaction can hold the write lock a moment longer than a dead process
    # would, and the service then answers 503 "retry later", as it should. So retry.
    for _ in range(50):
        taking_over = await agent.call("POST", "/purge/runs", {}, **OPERATOR)
        if taking_over.status_code != 503:
            break
        await asyncio.sleep(0.1)
    assert taking_over.status_code == 202, taking_over.text
    interrupted = await agent.run_until(str(run.id), lambda r: r["finished_at"] is not None)
    assert interrupted["status"] == "interrupted"
    outcomes = {
        line["opportunity_id"]: line["outcome"] for line in journal_lines(agent, str(run.id))
    }
    assert outcomes[str(deal)] == "in_progress"  # (the held deal of the test above: skipped)
    assert set(outcomes.values()) == {"in_progress", "skipped"}
    await agent.run_until(taking_over.json()["id"], lambda r: r["finished_at"] is not None)
    await set_journal(agent, False)
