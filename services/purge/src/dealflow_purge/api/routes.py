"""The operators' endpoints of the purge agent (roles operator or admin; others 403)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from dealflow_common.auth import Principal, Role
from dealflow_common.db import reading
from dealflow_common.http.fields import WHOLE_NUMBER
from dealflow_common.http.problems import problem_responses
from dealflow_common.http.security import requires
from dealflow_purge.adapters.store import PurgeStore, RunItem
from dealflow_purge.application import operations
from dealflow_purge.application.agent import (
    PurgeAgent,
    RunNotFound,
    UnitOfWorkFactory,
    cutoffs,
)
from dealflow_purge.application.metrics import PurgeMetrics
from dealflow_purge.domain.policy import MAX_RETENTION_DAYS, CronSchedule, PurgePolicy
from dealflow_purge.domain.progress import DealPurge
from dealflow_purge.domain.runs import PurgeRun

Operator = Annotated[Principal, Depends(requires(Role.OPERATOR, Role.ADMIN))]
Launch = Callable[[UUID], None]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunRequest(_Request):
    dry_run: bool = False


class PolicyBody(_Request):
    retention_days_won: Annotated[
        int,
        Field(
            ge=0,
            le=MAX_RETENTION_DAYS,
            strict=True,
            description="Days a won deal is kept after it closed",
        ),
        WHOLE_NUMBER,
    ]
    retention_days_lost: Annotated[
        int,
        Field(
            ge=0,
            le=MAX_RETENTION_DAYS,
            strict=True,
            description="Days a lost deal is kept after it closed",
        ),
        WHOLE_NUMBER,
    ]
    batch_size: Annotated[
        int,
        Field(ge=1, strict=True, description="Deals per batch (at most the service's maximum)"),
        WHOLE_NUMBER,
    ]
    schedule: str = Field(description="Five-field crontab expression, UTC")
    journal: bool = Field(
        default=False,
        description="Each run writes a JSON Lines journal of the deals it purged, skipped "
        "or failed (purge-run-<run id>.jsonl in the service's journal directory)",
    )


class PolicyResponse(PolicyBody):
    version: int


class HoldRequest(_Request):
    opportunity_id: UUID
    reason: str = Field(min_length=1, max_length=1000)


class HoldResponse(BaseModel):
    opportunity_id: UUID
    reason: str
    placed_by: str
    placed_at: datetime


class RunResponse(BaseModel):
    id: UUID
    trigger: str
    dry_run: bool
    status: str
    started_by: str
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    planned: int | None = Field(
        description="Deals the run expected to examine when it started (a progress bar's "
        "total; deals learned of while it goes may add to it)"
    )
    examined: int
    in_progress: int = Field(description="Examined deals whose purge is still under way")
    purged: int
    would_purge: int
    skipped: int
    failed: int
    error: str | None
    policy: PolicyResponse


class ItemResponse(BaseModel):
    opportunity_id: UUID
    outcome: str
    reason: str | None
    quotes_purged: int
    updated_at: datetime


class StuckDeal(BaseModel):
    opportunity_id: UUID
    state: str
    failed_step: str | None
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None


class StatusResponse(BaseModel):
    paused: bool
    next_run_at: datetime | None
    running_run: RunResponse | None
    last_run: RunResponse | None
    backlog: int
    in_progress: int
    stuck: list[StuckDeal]


def _policy(p: PurgePolicy) -> PolicyResponse:
    return PolicyResponse(
        retention_days_won=p.retention_days_won,
        retention_days_lost=p.retention_days_lost,
        batch_size=p.batch_size,
        schedule=p.schedule,
        journal=p.journal,
        version=p.version,
    )


def _run(run: PurgeRun, live: dict[str, int] | None = None) -> RunResponse:
    counts: dict[str, Any] = {
        "examined": run.examined,
        "purged": run.purged,
        "would_purge": run.would_purge,
        "skipped": run.skipped,
        "failed": run.failed,
        "in_progress": run.examined - run.purged - run.would_purge - run.skipped - run.failed,
    }
    return RunResponse(
        id=run.id,
        trigger=run.trigger,
        dry_run=run.dry_run,
        status=run.status.value,
        started_by=run.started_by,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_seconds=run.duration_seconds,
        planned=run.planned,
        error=run.error,
        policy=_policy(run.policy),
        **(live or counts),
    )


async def _live_counts(store: PurgeStore, run: PurgeRun) -> dict[str, int] | None:
    """A running run's counts so far, from its items."""
    if run.finished_at is not None:
        return None
    counts = {k.value: v for k, v in (await store.item_counts(run.id)).items()}
    return {
        "examined": sum(counts.values()),
        "purged": counts.get("purged", 0),
        "would_purge": counts.get("would_purge", 0),
        "skipped": counts.get("skipped", 0),
        "failed": counts.get("failed", 0),
        "in_progress": counts.get("in_progress", 0),
    }


def _item(item: RunItem) -> ItemResponse:
    return ItemResponse(
        opportunity_id=item.opportunity_id,
        outcome=item.outcome.value,
        reason=item.reason,
        quotes_purged=item.quotes_purged,
        updated_at=item.updated_at,
    )


def _stuck(p: DealPurge) -> StuckDeal:
    return StuckDeal(
        opportunity_id=p.opportunity_id,
        state=p.state.value,
        failed_step=p.failed_step,
        attempts=p.attempts,
        last_error=p.last_error,
        next_attempt_at=p.next_attempt_at,
    )


def purge_routes(
    engine: AsyncEngine,
    unit_of_work: UnitOfWorkFactory,
    agent: PurgeAgent,
    cron: CronSchedule,
    metrics: PurgeMetrics,
    clock: Callable[[], datetime],
    launch: Launch,
) -> APIRouter:
    router = APIRouter(prefix="/purge", tags=["purge"])
    reads = problem_responses(401, 403, 404, 422)
    changes = problem_responses(401, 403, 404, 409, 422)

    async def read(work: Callable[[PurgeStore], Any]) -> Any:
        async with reading(engine) as connection:
            return await work(PurgeStore(connection))

    @router.get("/status", responses=reads, summary="Paused or not, next run, backlog, stuck")
    async def status(caller: Operator) -> StatusResponse:
        async def work(store: PurgeStore) -> StatusResponse:
            now = clock()
            agent_row = await store.agent()
            running = None
            if agent_row.running_run_id and agent_row.lease_until and agent_row.lease_until > now:
                found = await store.run(agent_row.running_run_id)
                running = _run(found, await _live_counts(store, found)) if found else None
            last = await store.last_finished_run()
            backlog = await store.backlog(cutoffs(await store.policy(), now))
            states = await store.purge_states()
            in_progress = sum(n for s, n in states.items() if s not in {"purged", "failed"})
            metrics.backlog.set(backlog)
            return StatusResponse(
                paused=agent_row.paused,
                next_run_at=agent_row.next_run_at,
                running_run=running,
                last_run=_run(last) if last else None,
                backlog=backlog,
                in_progress=in_progress,
                stuck=[_stuck(p) for p in await store.stuck()],
            )

        result: StatusResponse = await read(work)
        return result

    @router.get("/runs", responses=reads, summary="Recent runs, newest first")
    async def list_runs(
        caller: Operator, limit: Annotated[int, Query(ge=1, le=200)] = 50
    ) -> list[RunResponse]:
        async def work(store: PurgeStore) -> list[RunResponse]:
            return [_run(r, await _live_counts(store, r)) for r in await store.runs(limit)]

        result: list[RunResponse] = await read(work)
        return result

    @router.get("/runs/{run_id}", responses=reads, summary="One run")
    async def get_run(run_id: UUID, caller: Operator) -> RunResponse:
        async def work(store: PurgeStore) -> RunResponse:
            run = await store.run(run_id)
            if run is None:
                raise RunNotFound(run_id)
            return _run(run, await _live_counts(store, run))

        result: RunResponse = await read(work)
        return result

    @router.get("/runs/{run_id}/items", responses=reads, summary="What a run purged or would")
    async def run_items(run_id: UUID, caller: Operator) -> list[ItemResponse]:
        async def work(store: PurgeStore) -> list[ItemResponse]:
            if await store.run(run_id) is None:
                raise RunNotFound(run_id)
            return [_item(i) for i in await store.items(run_id)]

        result: list[ItemResponse] = await read(work)
        return result

    @router.post(
        "/runs",
        status_code=202,
        responses={
            **changes,
            200: {"description": "A run is going: that run", "model": RunResponse},
        },
        summary="Run now (dry_run lists what would go); a run going answers 200 with itself",
    )
    async def start_run(body: RunRequest, caller: Operator, response: Response) -> RunResponse:
        run, started = await agent.request_run(
            trigger="operator", dry_run=body.dry_run, by=caller.user_id
        )
        if started:
            launch(run.id)
        else:
            response.status_code = 200
        response.headers["Location"] = f"/purge/runs/{run.id}"
        return _run(run)

    @router.post("/pause", status_code=204, responses=changes, summary="Pause the agent")
    async def pause(caller: Operator) -> None:
        await operations.pause(unit_of_work)

    @router.post(
        "/resume", status_code=204, responses=changes, summary="Resume (409 if not paused)"
    )
    async def resume(caller: Operator) -> None:
        await operations.resume(unit_of_work)

    @router.get("/policy", responses=reads, summary="The purge policy")
    async def get_policy(caller: Operator) -> PolicyResponse:
        async def work(store: PurgeStore) -> PolicyResponse:
            return _policy(await store.policy())

        result: PolicyResponse = await read(work)
        return result

    @router.put("/policy", responses=changes, summary="Replace the purge policy")
    async def put_policy(body: PolicyBody, caller: Operator) -> PolicyResponse:
        policy = await operations.change_policy(
            unit_of_work,
            cron,
            retention_days_won=body.retention_days_won,
            retention_days_lost=body.retention_days_lost,
            batch_size=body.batch_size,
            schedule=body.schedule,
            max_batch_size=agent.config.max_batch_size,
            by=caller.user_id,
            journal=body.journal,
        )
        return _policy(policy)

    @router.get("/holds", responses=reads, summary="Deals on hold")
    async def list_holds(caller: Operator) -> list[HoldResponse]:
        async def work(store: PurgeStore) -> list[HoldResponse]:
            return [HoldResponse(**vars(h)) for h in await store.holds_list()]

        result: list[HoldResponse] = await read(work)
        return result

    @router.post("/holds", status_code=201, responses=changes, summary="Put a deal on hold")
    async def place_hold(body: HoldRequest, caller: Operator) -> HoldResponse:
        hold = await operations.place_hold(
            unit_of_work, body.opportunity_id, body.reason, caller.user_id
        )
        return HoldResponse(**vars(hold))

    @router.delete(
        "/holds/{opportunity_id}", status_code=204, responses=changes, summary="Release a hold"
    )
    async def release_hold(opportunity_id: UUID, caller: Operator) -> None:
        await operations.release_hold(unit_of_work, opportunity_id)

    return router


def background_launcher(agent: PurgeAgent) -> Launch:
    """Carry a started run on in the background; its lease guards against a stop."""
    tasks: set[asyncio.Task[Any]] = set()

    def launch(run_id: UUID) -> None:
        task = asyncio.get_running_loop().create_task(agent.execute(run_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return launch
