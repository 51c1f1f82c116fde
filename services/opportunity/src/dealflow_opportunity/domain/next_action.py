"""Where the deal's next action comes from, and which one wins.

The next action (a date and a note) is what the rep does next on the deal; lists sort
by it. It is set in three ways, and a person's word is never overwritten by automation
while it still lies ahead:

1. **By hand** (`POST`/`PATCH /opportunities`): kept while its date is today or later,
   whatever tasks and sequences do meanwhile. Cleared by hand (`null`), the deal falls
   back to its tasks at once.
2. **By a sequence's `next_action` step** (`sequence.step_executed`): sets it unless a
   next action set by hand still lies ahead; then kept while its date is today or later,
   like one set by hand (the newer of two steps wins).
3. **From the deal's open tasks** (`task.created`, `task.completed`): otherwise the next
   action is the earliest due date of the deal's open tasks (an overdue one included:
   it is the most urgent thing to do), with the task's title as the note. When the
   last open task is done, a next action that came from tasks is cleared.

A next action set by hand or by a step whose date has passed stays (it shows the deal
is overdue) until a task event or a person replaces it. Rules are applied when
something happens to the deal (a request, a task or step event), not by a clock, so a
next action set by hand that has just passed gives way at the deal's next task event.
A closed deal has no next action, and nothing here gives it one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from uuid import UUID

from dealflow_common.contracts.opportunity import NextAction

NOTE_LENGTH = 1000


class NextActionSource(StrEnum):
    HAND = "hand"
    """Set through the opportunity API."""
    SEQUENCE = "sequence"
    """Set by a sequence's `next_action` step."""
    TASK = "task"
    """The earliest due date of the deal's open tasks."""


EXPLICIT = frozenset({NextActionSource.HAND, NextActionSource.SEQUENCE})
"""Sources whose next action is kept while it lies ahead."""


@dataclass(frozen=True, slots=True)
class OpenTask:
    """One open follow-up task of the deal, as the sequence service's events tell it."""

    task_id: UUID
    title: str
    due_at: datetime

    def as_next_action(self) -> NextAction:
        return NextAction(date=self.due_at.date(), note=self.title[:NOTE_LENGTH] or None)


def lies_ahead(action: NextAction | None, today: date) -> bool:
    return action is not None and action.date >= today


def after_tasks_changed(
    current: NextAction | None,
    source: NextActionSource | None,
    earliest: OpenTask | None,
    today: date,
) -> tuple[NextAction | None, NextActionSource | None]:
    """The next action once the deal's open tasks are as they now are (`earliest` is
    the one due first, None when none is open)."""
    if source in EXPLICIT and lies_ahead(current, today):
        return current, source
    if earliest is not None:
        return earliest.as_next_action(), NextActionSource.TASK
    if source == NextActionSource.TASK:
        return None, None
    return current, source


def after_step(
    current: NextAction | None,
    source: NextActionSource | None,
    planned: NextAction,
    today: date,
) -> tuple[NextAction | None, NextActionSource | None]:
    """The next action once a sequence step has planned `planned`."""
    if source == NextActionSource.HAND and lies_ahead(current, today):
        return current, source
    return planned, NextActionSource.SEQUENCE


def after_hand(
    given: NextAction | None, earliest: OpenTask | None
) -> tuple[NextAction | None, NextActionSource | None]:
    """The next action once a person set `given` (None: cleared, so the tasks rule)."""
    if given is not None:
        return given, NextActionSource.HAND
    if earliest is not None:
        return earliest.as_next_action(), NextActionSource.TASK
    return None, None
