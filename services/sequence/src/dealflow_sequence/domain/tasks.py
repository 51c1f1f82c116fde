"""Follow-up tasks (and appointments) of a deal: open until done; overdue is derived.

A task is created by a sequence step or by hand, carries notes, and is completed once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from uuid import UUID, uuid4

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.sequence import TaskCompleted, TaskCreated, TaskKind
from dealflow_common.errors import RuleViolated
from dealflow_sequence.domain.errors import TaskActionNotAllowed


class TaskState(StrEnum):
    OPEN = "open"
    DONE = "done"


class TaskFilter(StrEnum):
    """What `GET /tasks?state=` selects: the stored states, and overdue (open, past due)."""

    OPEN = "open"
    OVERDUE = "overdue"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class TaskNote:
    id: UUID
    task_id: UUID
    text: str
    author: str
    added_at: datetime


@dataclass(eq=False)
class Task:
    id: UUID
    opportunity_id: UUID
    kind: TaskKind
    title: str
    assignee: str
    due_at: datetime
    state: TaskState
    created_by: str
    created_at: datetime
    enrollment_id: UUID | None = None
    completed_by: str | None = None
    completed_at: datetime | None = None
    version: int = 1
    notes: list[TaskNote] = field(default_factory=list)
    events: list[EventPayload] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        *,
        opportunity_id: UUID,
        title: str,
        kind: TaskKind,
        assignee: str,
        due_at: datetime,
        by: str,
        now: datetime,
        enrollment_id: UUID | None = None,
    ) -> Task:
        if not title.strip() or len(title) > 500:
            raise RuleViolated("title", "a title of 1 to 500 characters is required")
        if not assignee.strip():
            raise RuleViolated("assignee", "required")
        task = cls(
            id=uuid4(),
            opportunity_id=opportunity_id,
            kind=kind,
            title=title.strip(),
            assignee=assignee,
            due_at=due_at,
            state=TaskState.OPEN,
            created_by=by,
            created_at=now,
            enrollment_id=enrollment_id,
        )
        task.events.append(
            TaskCreated(
                opportunity_id=opportunity_id,
                task_id=task.id,
                kind=kind,
                title=task.title,
                assignee=assignee,
                due_at=due_at,
                enrollment_id=enrollment_id,
                created_by=by,
                created_at=now,
            )
        )
        return task

    def is_overdue(self, now: datetime) -> bool:
        return self.state == TaskState.OPEN and self.due_at < now

    def allowed_actions(self) -> list[str]:
        return ["complete", "add_note"] if self.state == TaskState.OPEN else ["add_note"]

    def complete(self, by: str, now: datetime) -> None:
        if self.state != TaskState.OPEN:
            raise TaskActionNotAllowed(self.state.value, "complete", self.allowed_actions())
        self.state = TaskState.DONE
        self.completed_by = by
        self.completed_at = now
        self.version += 1
        self.events.append(
            TaskCompleted(
                opportunity_id=self.opportunity_id,
                task_id=self.id,
                completed_by=by,
                completed_at=now,
            )
        )

    def add_note(self, text: str, by: str, now: datetime) -> TaskNote:
        if not text.strip() or len(text) > 5000:
            raise RuleViolated("text", "a note of 1 to 5000 characters is required")
        note = TaskNote(uuid4(), self.id, text.strip(), by, now)
        self.notes.append(note)
        return note
