"""Enrollments: one deal's course through one version of a sequence.

The state machine is one declarative table (`TRANSITIONS`), read by the aggregate, the
API (`allowed_actions`) and the generated diagram. `active` runs its steps in order at
their due times; `paused` keeps the time that was left to the next step and goes on
with it when resumed; `completed` (every step ran) and `cancelled` (by hand, or an exit
condition: deal closed, trigger stage left, deal purged) are final.

Step k falls due `after_k` after step k-1 ran (step 1: after enrollment), so a step
that ran late (the service was down) does not crowd the next one onto it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final
from uuid import UUID, uuid4

from jinja2 import TemplateError

from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.sequence import (
    SEQUENCE_ACTOR,
    EmailRequested,
    NextActionData,
    SequenceCancelled,
    SequenceCompleted,
    SequenceEnrolled,
    SequencePaused,
    SequenceResumed,
    SequenceStepExecuted,
    StepAction,
)
from dealflow_sequence.domain.deal import KnownDeal
from dealflow_sequence.domain.definitions import SequenceDefinition, Step
from dealflow_sequence.domain.errors import EnrollmentActionNotAllowed
from dealflow_sequence.domain.tasks import Task
from dealflow_sequence.domain.templates import render_template


class EnrollmentState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class EnrollmentTrigger(StrEnum):
    RUN_STEP = "run_step"
    """The scheduler ran a due step and more remain."""
    FINISH = "finish"
    """The scheduler ran the last step."""
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    """A person cancels it."""
    EXIT = "exit"
    """An exit condition holds: deal closed, trigger stage left, deal purged."""


S, T = EnrollmentState, EnrollmentTrigger

TRANSITIONS: Final[Mapping[EnrollmentState, Mapping[EnrollmentTrigger, EnrollmentState]]] = (
    MappingProxyType(
        {
            S.ACTIVE: {
                T.RUN_STEP: S.ACTIVE,
                T.FINISH: S.COMPLETED,
                T.PAUSE: S.PAUSED,
                T.CANCEL: S.CANCELLED,
                T.EXIT: S.CANCELLED,
            },
            S.PAUSED: {T.RESUME: S.ACTIVE, T.CANCEL: S.CANCELLED, T.EXIT: S.CANCELLED},
            S.COMPLETED: {},
            S.CANCELLED: {},
        }
    )
)

HAND_TRIGGERS: Final = (T.PAUSE, T.RESUME, T.CANCEL)
"""What a person may do through the API; the others are the scheduler's and the handlers'."""

LIVE: Final = frozenset(s for s in EnrollmentState if TRANSITIONS[s])
"""States in which something can still happen (active, paused)."""

SYSTEM = SEQUENCE_ACTOR


def allowed_actions(state: EnrollmentState) -> list[str]:
    return [t.value for t in HAND_TRIGGERS if t in TRANSITIONS[state]]


def mermaid_diagram() -> str:
    lines = ["stateDiagram-v2", "    [*] --> active"]
    for source, by_trigger in TRANSITIONS.items():
        for trigger, target in by_trigger.items():
            if source != target:
                lines.append(f"    {source.value} --> {target.value}: {trigger.value}")
    lines += ["    completed --> [*]", "    cancelled --> [*]"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class StepRun:
    """The record of a step that ran: the follow-up history shows it."""

    step_no: int
    action: StepAction
    due_at: datetime
    executed_at: datetime
    result: str
    detail: str | None = None
    task_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class StepOutcome:
    run: StepRun
    task: Task | None = None


@dataclass(eq=False)
class Enrollment:
    id: UUID
    opportunity_id: UUID
    sequence_id: UUID
    sequence_version: int
    sequence_name: str
    state: EnrollmentState
    next_step: int | None
    """1-based number of the step to run next; None once none is left."""
    next_due_at: datetime | None
    """When the next step falls due; None while paused or ended."""
    remaining: timedelta | None
    """While paused: the time that was left to the next step."""
    enrolled_by: str
    enrolled_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None
    version: int = 1
    events: list[EventPayload] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        definition: SequenceDefinition,
        opportunity_id: UUID,
        *,
        by: str,
        now: datetime,
        trigger_event_id: UUID | None = None,
    ) -> Enrollment:
        first_due = now + definition.steps[0].after.length
        enrollment = cls(
            id=uuid4(),
            opportunity_id=opportunity_id,
            sequence_id=definition.id,
            sequence_version=definition.version,
            sequence_name=definition.name,
            state=EnrollmentState.ACTIVE,
            next_step=1,
            next_due_at=first_due,
            remaining=None,
            enrolled_by=by,
            enrolled_at=now,
        )
        enrollment.events.append(
            SequenceEnrolled(
                opportunity_id=opportunity_id,
                enrollment_id=enrollment.id,
                sequence_id=definition.id,
                sequence_version=definition.version,
                sequence_name=definition.name,
                enrolled_by=by,
                trigger_event_id=trigger_event_id,
                enrolled_at=now,
                first_step_due_at=first_due,
            )
        )
        return enrollment

    @property
    def is_live(self) -> bool:
        return self.state in LIVE

    def allowed_actions(self) -> list[str]:
        return allowed_actions(self.state)

    def _move(self, trigger: EnrollmentTrigger) -> None:
        target = TRANSITIONS[self.state].get(trigger)
        if target is None:
            allowed = self.allowed_actions()
            raise EnrollmentActionNotAllowed(self.state.value, trigger.value, allowed)
        self.state = target
        self.version += 1

    def is_due(self, now: datetime) -> bool:
        return (
            self.state == EnrollmentState.ACTIVE
            and self.next_due_at is not None
            and self.next_due_at <= now
        )

    def run_due_step(
        self, definition: SequenceDefinition, deal: KnownDeal, now: datetime
    ) -> StepOutcome:
        """Run the next step (it must be due) and schedule the one after it, or finish.

        A step whose email cannot be rendered is recorded as failed and the enrollment
        goes on: one broken template must not hold every later follow-up."""
        assert self.next_step is not None
        assert self.next_due_at is not None
        if definition.id != self.sequence_id or definition.version != self.sequence_version:
            raise ValueError("an enrollment runs the definition version it started with")
        step_no, due_at = self.next_step, self.next_due_at
        step = definition.steps[step_no - 1]
        has_more = step_no < len(definition.steps)
        self._move(EnrollmentTrigger.RUN_STEP if has_more else EnrollmentTrigger.FINISH)
        outcome = self._perform(step, step_no, due_at, deal, now)
        if has_more:
            self.next_step = step_no + 1
            self.next_due_at = now + definition.steps[step_no].after.length
        else:
            self.next_step = None
            self.next_due_at = None
            self.ended_at = now
            self.end_reason = "every step ran"
            self.events.append(
                SequenceCompleted(
                    opportunity_id=self.opportunity_id,
                    enrollment_id=self.id,
                    sequence_id=self.sequence_id,
                    completed_at=now,
                )
            )
        return outcome

    def _perform(
        self, step: Step, step_no: int, due_at: datetime, deal: KnownDeal, now: datetime
    ) -> StepOutcome:
        def executed(**result: Any) -> SequenceStepExecuted:
            return SequenceStepExecuted(
                opportunity_id=self.opportunity_id,
                enrollment_id=self.id,
                sequence_id=self.sequence_id,
                step_no=step_no,
                action=step.action,
                due_at=due_at,
                executed_at=now,
                **result,
            )

        if step.action == StepAction.TASK:
            assert step.title is not None
            assert step.due is not None
            task = Task.create(
                opportunity_id=self.opportunity_id,
                title=step.title,
                kind=step.kind,
                assignee=step.assignee or deal.owner,
                due_at=now + step.due.length,
                by=SYSTEM,
                now=now,
                enrollment_id=self.id,
            )
            self.events.append(executed(result="done", task_id=task.id))
            run = StepRun(step_no, step.action, due_at, now, "done", f"task {task.id}", task.id)
            return StepOutcome(run, task)
        if step.action == StepAction.EMAIL:
            assert step.subject is not None
            assert step.body is not None
            try:
                subject = render_template(step.subject, deal.template_fields())
                body = render_template(step.body, deal.template_fields())
            except TemplateError as error:
                detail = f"the email could not be rendered: {error}"
                self.events.append(executed(result="failed", detail=detail))
                return StepOutcome(StepRun(step_no, step.action, due_at, now, "failed", detail))
            email_id = uuid4()
            self.events.append(
                EmailRequested(
                    opportunity_id=self.opportunity_id,
                    email_id=email_id,
                    enrollment_id=self.id,
                    step_no=step_no,
                    sender=deal.owner,
                    to=deal.contact_email,
                    subject_line=subject,
                    body=body,
                    requested_at=now,
                )
            )
            self.events.append(executed(result="done", email_id=email_id))
            return StepOutcome(
                StepRun(step_no, step.action, due_at, now, "done", f"email {email_id} requested")
            )
        assert step.due is not None
        next_action = NextActionData(date=(now + step.due.length).date(), note=step.note)
        self.events.append(executed(result="done", next_action=next_action))
        detail = f"next action {next_action.date.isoformat()}" + (
            f": {step.note}" if step.note else ""
        )
        return StepOutcome(StepRun(step_no, step.action, due_at, now, "done", detail))

    def pause(self, by: str, now: datetime) -> None:
        self._move(EnrollmentTrigger.PAUSE)
        assert self.next_due_at is not None
        self.remaining = max(self.next_due_at - now, timedelta(0))
        self.next_due_at = None
        self.events.append(
            SequencePaused(
                opportunity_id=self.opportunity_id,
                enrollment_id=self.id,
                sequence_id=self.sequence_id,
                paused_by=by,
                paused_at=now,
            )
        )

    def resume(self, by: str, now: datetime) -> None:
        self._move(EnrollmentTrigger.RESUME)
        self.next_due_at = now + (self.remaining or timedelta(0))
        self.remaining = None
        self.events.append(
            SequenceResumed(
                opportunity_id=self.opportunity_id,
                enrollment_id=self.id,
                sequence_id=self.sequence_id,
                resumed_by=by,
                resumed_at=now,
                next_step_due_at=self.next_due_at,
            )
        )

    def cancel(self, reason: str, by: str, now: datetime, *, by_hand: bool = True) -> None:
        self._move(EnrollmentTrigger.CANCEL if by_hand else EnrollmentTrigger.EXIT)
        self.next_due_at = None
        self.remaining = None
        self.ended_at = now
        self.end_reason = reason
        self.events.append(
            SequenceCancelled(
                opportunity_id=self.opportunity_id,
                enrollment_id=self.id,
                sequence_id=self.sequence_id,
                reason=reason,
                cancelled_by=by,
                cancelled_at=now,
            )
        )
