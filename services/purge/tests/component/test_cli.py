"""`dealflow-purge` against the purge app in-process (its real API on a real database):
what it prints and the exit status, for each command and for the API's refusals."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest
from rich.console import Console

from dealflow_common.contracts.opportunity import Stage
from dealflow_purge import cli

from .test_run import opportunity_purged, quotes_purged

T = TypeVar("T")


@dataclass
class Result:
    code: int
    out: str
    err: str


async def purge(agent, *argv: str, roles: tuple[str, ...] = ("operator",)) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = await cli.run(
        ["--token", agent.token("olga", roles, ()), *argv],
        env={},
        out=Console(file=out, width=200, color_system=None),
        err=Console(file=err, width=200, color_system=None),
        http=agent.http,
    )
    return Result(code, out.getvalue(), err.getvalue())


_PURGE_QUOTES = "quote.purge_requested"


async def until(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 10.0
) -> T:
    """What `read` answers once `done` holds (polled, as the CLI polls the API)."""
    for _ in range(int(timeout / 0.02)):
        value = await read()
        if done(value):
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"never got there: {value}")


async def test_status_of_an_idle_agent(agent) -> None:
    result = await purge(agent, "status")
    assert result.code == 0, result.err
    assert "agent" in result.out
    assert "active" in result.out
    assert "backlog      0 deals eligible" in result.out
    assert "last run     -" in result.out


async def test_no_token_is_a_usage_error(agent) -> None:
    err = io.StringIO()
    code = await cli.run(["status"], env={}, err=Console(file=err), http=agent.http)
    assert code == cli.USAGE
    assert "DEALFLOW_TOKEN" in err.getvalue()


async def test_the_token_may_come_from_the_environment(agent) -> None:
    out = io.StringIO()
    env = {"DEALFLOW_TOKEN": agent.token("ada", ("admin",), ())}
    code = await cli.run(["policy"], env=env, out=Console(file=out), http=agent.http)
    assert code == 0
    assert "retention_days_won" in out.getvalue()


async def test_a_refusal_prints_the_problem_and_exits_non_zero(agent) -> None:
    result = await purge(agent, "status", roles=("rep",))
    assert result.code == cli.API_ERROR
    assert result.err.startswith("error: Forbidden")
    assert result.out == ""


async def test_pause_resume_and_their_refusals(agent) -> None:
    assert (await purge(agent, "pause")).code == 0
    assert "paused" in (await purge(agent, "status")).out
    refused = await purge(agent, "run")
    assert (refused.code, refused.err.strip()) == (
        1,
        "error: Conflict: the purge agent is paused; resume it to run",
    )
    resumed = await purge(agent, "resume")
    assert (resumed.code, resumed.out.strip()) == (0, "purge agent resumed")
    again = await purge(agent, "resume")
    assert again.code == 1
    assert "the purge agent is not paused" in again.err


async def test_hold_holds_and_unhold(agent) -> None:
    deal, _ = await agent.deal(Stage.CLOSED_WON, 10)
    held = await purge(agent, "hold", str(deal), "--reason", "litigation 2026-17")
    assert held.code == 0, held.err
    assert held.out.strip() == f"hold placed on {deal} by olga: litigation 2026-17"
    listed = await purge(agent, "holds")
    assert str(deal) in listed.out
    assert "litigation 2026-17" in listed.out
    assert (await purge(agent, "unhold", str(deal))).out.strip() == f"hold on {deal} released"
    assert (await purge(agent, "holds")).out.strip() == "no deals on hold"

    unknown = uuid.uuid4()
    refused = await purge(agent, "hold", str(unknown))
    assert refused.code == 1
    assert refused.err.startswith(f"error: Opportunity not found: opportunity {unknown}")
    assert (await purge(agent, "unhold", str(unknown))).code == 1
    not_an_id = await purge(agent, "hold", "not-an-id")
    assert not_an_id.code == 1
    assert "opportunity_id" in not_an_id.err  # the field the API names


async def test_policy_show_and_set(agent) -> None:
    shown = await purge(agent, "policy")
    assert shown.code == 0
    assert "batch_size           100" in shown.out
    assert "journal              false" in shown.out

    changed = await purge(agent, "policy", "--set", "batch_size=50", "--set", "journal=on")
    assert changed.code == 0, changed.err
    assert "batch_size           50" in changed.out
    assert "journal              true" in changed.out

    bad = await purge(agent, "policy", "--set", "batch_size=0")
    assert bad.code == 1
    assert "Invalid request" in bad.err
    assert "batch_size" in bad.err
    schedule = await purge(agent, "policy", "--set", "schedule=every hour")
    assert schedule.code == 1
    assert "not a valid cron expression" in schedule.err
    for usage in ("colour=blue", "batch_size=lots", "journal=maybe", "batch_size"):
        refused = await purge(agent, "policy", "--set", usage)
        assert refused.code == cli.USAGE, usage
    restored = await purge(agent, "policy", "--set", "batch_size=100", "--set", "journal=false")
    assert restored.code == 0


async def test_dry_run_lists_what_would_go_then_run_follow_purges_it(agent) -> None:
    won, won_quotes = await agent.deal(Stage.CLOSED_WON, 40, quotes=2)
    lost, _ = await agent.deal(Stage.CLOSED_LOST, 35)
    held, _ = await agent.deal(Stage.CLOSED_LOST, 400)
    await agent.deal(Stage.CLOSED_WON, 3)  # within retention
    assert (await purge(agent, "hold", str(held))).code == 0

    dry = await purge(agent, "dry-run", "--interval", "0.02")
    assert dry.code == 0, dry.err
    lines = dry.out.splitlines()
    assert any(str(won) in line and "would purge" in line for line in lines)
    assert any(str(lost) in line and "would purge" in line for line in lines)
    assert any(str(held) in line and "skipped" in line and "on_hold" in line for line in lines)
    assert "2 deals would be purged, 1 skipped (nothing was changed)" in dry.out
    assert await agent.commands() == []

    agent.clock.advance(seconds=1)  # the run finishes after the dry run, not with it
    follow = asyncio.create_task(purge(agent, "run", "--follow", "--interval", "0.02"))
    await until(lambda: agent.commands(), lambda commands: len(commands) == 2)
    run_id = (await agent.call("GET", "/purge/runs", roles=("operator",))).json()[0]["id"]
    await quotes_purged(agent, won, won_quotes, run_id)
    await quotes_purged(agent, lost, [], run_id)
    await opportunity_purged(agent, won, run_id)
    await opportunity_purged(agent, lost, run_id)
    result = await asyncio.wait_for(follow, 10)

    assert result.code == 0, result.err
    assert f"run {run_id} started" in result.out
    # The bars as drawn last: every deal examined, two purged, none failed, of 3 planned.
    assert "examined" in result.out
    assert "3/3" in result.out
    assert "purged" in result.out
    assert "2/3" in result.out
    assert "failed" in result.out
    assert "0/3" in result.out
    assert f"run {run_id} succeeded in" in result.out
    assert "3 examined, 2 purged, 1 skipped, 0 failed" in result.out

    runs = await purge(agent, "runs")
    assert runs.code == 0
    rows = [line for line in runs.out.splitlines() if run_id in line]
    assert len(rows) == 1
    assert "succeeded" in rows[0]
    assert "operator" in rows[0]
    assert "dry run" in runs.out

    status = await purge(agent, "status")
    assert f"run {run_id} succeeded" in status.out
    assert "backlog      0 deals" in status.out


async def test_run_follow_of_a_failing_run_exits_3_and_names_the_deal(agent) -> None:
    silent, _ = await agent.deal(Stage.CLOSED_LOST, 45, quotes=1)
    follow = asyncio.create_task(purge(agent, "run", "-f", "--interval", "0.02"))
    await until(lambda: agent.commands(), lambda commands: (_PURGE_QUOTES, str(silent)) in commands)
    agent.clock.advance(seconds=61)  # the quote service never answers
    result = await asyncio.wait_for(follow, 10)
    assert result.code == cli.RUN_NOT_SUCCEEDED
    assert "failed" in result.out
    assert f"failed {silent}: no answer from the quote service in time" in result.out
    status = await purge(agent, "status")
    assert "stuck        1 deals" in status.out
    assert str(silent) in status.out


async def test_run_without_follow_answers_at_once(agent) -> None:
    agent.clock.advance(hours=3)  # the stuck deal's retry is due: the run has work
    result = await purge(agent, "run")
    assert result.code == 0
    assert "started" in result.out
    assert "--follow" in result.out
    again = await purge(agent, "run")
    assert again.code == 0
    assert again.out.startswith("a run is already going:")
    refused = await purge(agent, "dry-run")
    assert refused.code == 1
    assert "A run is going" in refused.err
    run_id = (await agent.call("GET", "/purge/runs", roles=("operator",))).json()[0]["id"]
    await agent.run_until(run_id, lambda r: r["examined"] >= 1)  # the retry was asked for
    agent.clock.advance(seconds=61)  # and is not answered
    await agent.run_until(run_id, lambda r: r["finished_at"] is not None)


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["runs", "--limit", "many"]])
async def test_usage_errors_exit_2(agent, argv, capsys) -> None:
    assert await cli.run(argv, env={"DEALFLOW_TOKEN": "x"}, http=agent.http) == cli.USAGE
    assert "usage: dealflow-purge" in capsys.readouterr().err
