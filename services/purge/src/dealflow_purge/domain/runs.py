"""Purge runs: what one pass of the agent examined, purged, skipped and failed.

A run is started by the schedule or by an operator, holds the agent's lock while it
goes, and lists each deal it looked at as an item with its outcome. A dry run lists
what would be purged and changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal
from uuid import UUID

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.purge import PurgeRunCompleted, PurgeRunStarted
from dealflow_common.errors import Conflict
from dealflow_purge.domain.policy import PurgePolicy


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """Finished, but at least one deal could not be purged (it is retried later)."""
    INTERRUPTED = "interrupted"
    """Its process stopped mid-run; the next run takes up its deals."""


class ItemOutcome(StrEnum):
    IN_PROGRESS = "in_progress"
    PURGED = "purged"
    WOULD_PURGE = "would_purge"
    SKIPPED = "skipped"
    FAILED = "failed"


class AgentPaused(Conflict):
    def __init__(self) -> None:
        super().__init__("the purge agent is paused; resume it to run")


class AgentNotPaused(Conflict):
    def __init__(self) -> None:
        super().__init__("the purge agent is not paused")


@dataclass(eq=False)
class PurgeRun:
    id: UUID
    trigger: Literal["schedule", "operator"]
    dry_run: bool
    policy: PurgePolicy
    started_by: str
    started_at: datetime
    status: RunStatus = RunStatus.RUNNING
    finished_at: datetime | None = None
    examined: int = 0
    purged: int = 0
    would_purge: int = 0
    skipped: int = 0
    failed: int = 0
    error: str | None = None
    planned: int | None = None
    """The deals it expected to examine when it started (null for runs before it was kept)."""
    events: list[EventPayload] = field(default_factory=list, repr=False)

    @classmethod
    def start(
        cls,
        *,
        trigger: Literal["schedule", "operator"],
        dry_run: bool,
        policy: PurgePolicy,
        by: str,
        now: datetime,
    ) -> PurgeRun:
        run = cls(uuid.uuid4(), trigger, dry_run, policy, by, now)
        run.events.append(
            PurgeRunStarted(
                run_id=run.id,
                trigger=trigger,
                dry_run=dry_run,
                policy=policy.snapshot(),
                started_by=by,
                started_at=now,
            )
        )
        return run

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def finish(self, now: datetime) -> None:
        self.status = RunStatus.FAILED if self.failed else RunStatus.SUCCEEDED
        self.finished_at = now
        self.events.append(
            PurgeRunCompleted(
                run_id=self.id,
                dry_run=self.dry_run,
                outcome="failed" if self.failed else "succeeded",
                examined=self.examined,
                purged=self.purged,
                would_purge=self.would_purge,
                skipped=self.skipped,
                failed=self.failed,
                started_at=self.started_at,
                finished_at=now,
                duration_seconds=(now - self.started_at).total_seconds(),
            )
        )
