"""Sequence definitions: a trigger, ordered steps and exit conditions, in versions.

A definition is stored as a document (`to_document`) and read back with the same
validation it was written with (`from_document`), so what the API accepts, what the
database holds and what the scheduler runs are one shape. Updating a definition makes
a new version; an enrollment keeps the version it started with until it ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from uuid import UUID, uuid4

from dealflow_common.contracts.opportunity import LeadOrigin, Stage
from dealflow_common.contracts.sequence import StepAction, TaskKind
from dealflow_common.errors import RuleViolated
from dealflow_sequence.domain.durations import Duration, parse_duration
from dealflow_sequence.domain.errors import SequenceRetired
from dealflow_sequence.domain.templates import check_template

STAGE_CHANGED: Final = "opportunity.stage_changed"
CREATED: Final = "opportunity.created"
TRIGGER_EVENTS: Final = (CREATED, STAGE_CHANGED)
"""The opportunity events a sequence can start on."""

OPEN_STAGES: Final = frozenset({Stage.LEAD, Stage.QUALIFICATION, Stage.PROPOSAL, Stage.NEGOTIATION})
MOST_STEPS = 50
DEFAULT_TASK_DUE: Final = "P1D"


class ExitCondition(StrEnum):
    DEAL_CLOSED = "deal_closed"
    """The deal was won or lost."""
    TRIGGER_STAGE_LEFT = "trigger_stage_left"
    """The deal moved out of the stage whose entry started the sequence."""


DEFAULT_EXITS: Final = (ExitCondition.DEAL_CLOSED, ExitCondition.TRIGGER_STAGE_LEFT)


def _text(
    document: Mapping[str, Any], key: str, field: str, *, required: bool = True
) -> str | None:
    value = document.get(key)
    if value is None:
        if required:
            raise RuleViolated(f"{field}.{key}", "required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise RuleViolated(f"{field}.{key}", "must be a non-empty string")
    if len(value) > 20_000:
        raise RuleViolated(f"{field}.{key}", "is too long")
    return value


@dataclass(frozen=True, slots=True)
class Trigger:
    """An opportunity event and its condition: the stage entered, or the lead origin."""

    event: str
    stage: Stage | None = None
    lead_origin: LeadOrigin | None = None

    @classmethod
    def from_document(cls, document: Mapping[str, Any], field: str = "trigger") -> Trigger:
        event = document.get("event")
        if event not in TRIGGER_EVENTS:
            raise RuleViolated(
                f"{field}.event",
                f"unknown trigger event type {event!r}; a sequence starts on one of: "
                + ", ".join(TRIGGER_EVENTS),
            )
        stage = _enum(Stage, document.get("stage"), f"{field}.stage")
        if stage is not None and stage not in OPEN_STAGES:
            raise RuleViolated(f"{field}.stage", f"{stage.value} is not an open stage")
        if event == STAGE_CHANGED and stage is None:
            raise RuleViolated(f"{field}.stage", "required: the stage whose entry starts it")
        origin = _enum(LeadOrigin, document.get("lead_origin"), f"{field}.lead_origin")
        if origin is not None and event != CREATED:
            raise RuleViolated(f"{field}.lead_origin", f"only a trigger on {CREATED} has one")
        return cls(str(event), stage, origin)

    def to_document(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "stage": self.stage.value if self.stage else None,
            "lead_origin": self.lead_origin.value if self.lead_origin else None,
        }

    def matches(self, event: str, stage: Stage | None, lead_origin: LeadOrigin | None) -> bool:
        return (
            event == self.event
            and (self.stage is None or stage == self.stage)
            and (self.lead_origin is None or lead_origin == self.lead_origin)
        )


def _enum(kind: Any, value: Any, field: str) -> Any:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise RuleViolated(field, f"unknown value {value!r}; one of: {allowed}") from None


_ACTION_FIELDS: Final[Mapping[StepAction, frozenset[str]]] = {
    StepAction.TASK: frozenset({"title", "assignee", "due", "kind"}),
    StepAction.EMAIL: frozenset({"subject", "body"}),
    StepAction.NEXT_ACTION: frozenset({"due", "note"}),
}


@dataclass(frozen=True, slots=True)
class Step:
    """One step: `after` the previous one ran (the first: after enrollment), an action.

    task: `title`, `assignee` (default: the deal's owner), `due` (after the step runs,
    default P1D), `kind` (task or appointment); email: `subject` and `body` templates;
    next_action: `due` (after the step runs) and `note`."""

    after: Duration
    action: StepAction
    title: str | None = None
    assignee: str | None = None
    due: Duration | None = None
    kind: TaskKind = TaskKind.TASK
    subject: str | None = None
    body: str | None = None
    note: str | None = None

    @classmethod
    def from_document(cls, document: Mapping[str, Any], field: str) -> Step:
        after = parse_duration(document.get("after"), f"{field}.after")
        action = document.get("action")
        if action not in {a.value for a in StepAction}:
            raise RuleViolated(
                f"{field}.action",
                f"unknown action {action!r}; one of: " + ", ".join(a.value for a in StepAction),
            )
        step_action = StepAction(action)
        given = {key for key, value in document.items() if value is not None}
        foreign = sorted(given - {"after", "action"} - _ACTION_FIELDS[step_action])
        if foreign:
            raise RuleViolated(f"{field}.{foreign[0]}", f"a {action} step has no {foreign[0]}")
        if step_action == StepAction.TASK:
            return cls(
                after,
                step_action,
                title=_text(document, "title", field),
                assignee=_text(document, "assignee", field, required=False),
                due=parse_duration(document.get("due") or DEFAULT_TASK_DUE, f"{field}.due"),
                kind=_enum(TaskKind, document.get("kind"), f"{field}.kind") or TaskKind.TASK,
            )
        if step_action == StepAction.EMAIL:
            subject = _text(document, "subject", field)
            body = _text(document, "body", field)
            assert subject is not None
            assert body is not None
            check_template(subject, f"{field}.subject")
            check_template(body, f"{field}.body")
            return cls(after, step_action, subject=subject, body=body)
        return cls(
            after,
            step_action,
            due=parse_duration(document.get("due") or "P0D", f"{field}.due"),
            note=_text(document, "note", field, required=False),
        )

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"after": self.after.text, "action": self.action.value}
        if self.action == StepAction.TASK:
            document |= {"title": self.title, "assignee": self.assignee, "kind": self.kind.value}
        if self.action == StepAction.EMAIL:
            document |= {"subject": self.subject, "body": self.body}
        if self.action == StepAction.NEXT_ACTION:
            document |= {"note": self.note}
        if self.due is not None:
            document["due"] = self.due.text
        return document


def parse_steps(documents: Sequence[Mapping[str, Any]]) -> tuple[Step, ...]:
    if not documents:
        raise RuleViolated("steps", "a sequence has at least one step")
    if len(documents) > MOST_STEPS:
        raise RuleViolated("steps", f"a sequence has at most {MOST_STEPS} steps")
    return tuple(Step.from_document(d, f"steps[{i}]") for i, d in enumerate(documents))


def parse_exits(values: Sequence[str] | None) -> tuple[ExitCondition, ...]:
    if values is None:
        return DEFAULT_EXITS
    exits = [_enum(ExitCondition, value, f"exit_conditions[{i}]") for i, value in enumerate(values)]
    return tuple(dict.fromkeys(exits))


@dataclass(frozen=True, slots=True)
class SequenceDefinition:
    """One version of a sequence. Versions are immutable; `revise` makes the next one."""

    id: UUID
    version: int
    name: str
    trigger: Trigger
    steps: tuple[Step, ...]
    exit_conditions: tuple[ExitCondition, ...]
    created_by: str
    created_at: datetime
    updated_at: datetime
    retired_at: datetime | None = None

    @classmethod
    def define(
        cls,
        *,
        name: str,
        trigger: Mapping[str, Any],
        steps: Sequence[Mapping[str, Any]],
        exit_conditions: Sequence[str] | None,
        by: str,
        now: datetime,
    ) -> SequenceDefinition:
        return cls(
            id=uuid4(),
            version=1,
            name=_name(name),
            trigger=Trigger.from_document(trigger),
            steps=parse_steps(steps),
            exit_conditions=parse_exits(exit_conditions),
            created_by=by,
            created_at=now,
            updated_at=now,
        )

    def revise(
        self,
        *,
        name: str,
        trigger: Mapping[str, Any],
        steps: Sequence[Mapping[str, Any]],
        exit_conditions: Sequence[str] | None,
        now: datetime,
    ) -> SequenceDefinition:
        """The next version; enrollments already running keep theirs."""
        if self.retired_at is not None:
            raise SequenceRetired(self.id, "update")
        return replace(
            self,
            version=self.version + 1,
            name=_name(name),
            trigger=Trigger.from_document(trigger),
            steps=parse_steps(steps),
            exit_conditions=parse_exits(exit_conditions),
            updated_at=now,
        )

    def retire(self, now: datetime) -> SequenceDefinition:
        """No new enrollments; running ones go on with their version."""
        if self.retired_at is not None:
            raise SequenceRetired(self.id, "retire")
        return replace(self, retired_at=now, updated_at=now)

    @property
    def is_retired(self) -> bool:
        return self.retired_at is not None

    def exits_on(self, condition: ExitCondition) -> bool:
        return condition in self.exit_conditions

    def document(self) -> dict[str, Any]:
        """The version's content as stored (name, trigger, steps, exit conditions)."""
        return {
            "name": self.name,
            "trigger": self.trigger.to_document(),
            "steps": [step.to_document() for step in self.steps],
            "exit_conditions": [c.value for c in self.exit_conditions],
        }

    @classmethod
    def from_document(
        cls,
        document: Mapping[str, Any],
        *,
        id: UUID,
        version: int,
        created_by: str,
        created_at: datetime,
        updated_at: datetime,
        retired_at: datetime | None,
    ) -> SequenceDefinition:
        return cls(
            id=id,
            version=version,
            name=document["name"],
            trigger=Trigger.from_document(document["trigger"]),
            steps=parse_steps(document["steps"]),
            exit_conditions=parse_exits(document["exit_conditions"]),
            created_by=created_by,
            created_at=created_at,
            updated_at=updated_at,
            retired_at=retired_at,
        )


def _name(name: str) -> str:
    if not name or not name.strip() or len(name) > 200:
        raise RuleViolated("name", "a name of 1 to 200 characters is required")
    return name.strip()
