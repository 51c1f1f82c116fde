"""The opportunity stage machine: one declarative table, read by the API, the saga
handlers and the generated diagram (docs/state-machine.md).

Forward moves go one stage at a time; moving back any number of stages is allowed;
any open stage can be lost (with a reason) or won by an accepted quote; a manual win
is only possible from negotiation. Closed stages end the sales process; after them
only the purge part of the machine applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from dealflow_common.contracts.opportunity import Stage


class Trigger(StrEnum):
    MOVE = "move"
    """A person moves the deal by hand."""
    LOSE = "lose"
    """A person closes the deal as lost, giving a reason."""
    ACCEPT_QUOTE = "accept_quote"
    """The customer accepted one of the deal's quotes (the accept-quote saga)."""
    REQUEST_PURGE = "request_purge"
    """The purge agent asks for a closed deal past its retention."""
    PURGE = "purge"
    """Every quote is purged; the deal is archived and deleted."""


LEAD, QUALIFICATION, PROPOSAL, NEGOTIATION = (
    Stage.LEAD,
    Stage.QUALIFICATION,
    Stage.PROPOSAL,
    Stage.NEGOTIATION,
)
WON, LOST, PURGE_PENDING, PURGED = (
    Stage.CLOSED_WON,
    Stage.CLOSED_LOST,
    Stage.PURGE_PENDING,
    Stage.PURGED,
)
MOVE, LOSE, ACCEPT, REQUEST_PURGE, PURGE = (
    Trigger.MOVE,
    Trigger.LOSE,
    Trigger.ACCEPT_QUOTE,
    Trigger.REQUEST_PURGE,
    Trigger.PURGE,
)

TRANSITIONS: Final[Mapping[Stage, Mapping[Trigger, frozenset[Stage]]]] = MappingProxyType(
    {
        LEAD: {
            MOVE: frozenset({QUALIFICATION}),
            LOSE: frozenset({LOST}),
            ACCEPT: frozenset({WON}),
        },
        QUALIFICATION: {
            MOVE: frozenset({PROPOSAL, LEAD}),
            LOSE: frozenset({LOST}),
            ACCEPT: frozenset({WON}),
        },
        PROPOSAL: {
            MOVE: frozenset({NEGOTIATION, QUALIFICATION, LEAD}),
            LOSE: frozenset({LOST}),
            ACCEPT: frozenset({WON}),
        },
        NEGOTIATION: {
            MOVE: frozenset({WON, PROPOSAL, QUALIFICATION, LEAD}),
            LOSE: frozenset({LOST}),
            ACCEPT: frozenset({WON}),
        },
        WON: {REQUEST_PURGE: frozenset({PURGE_PENDING})},
        LOST: {REQUEST_PURGE: frozenset({PURGE_PENDING})},
        PURGE_PENDING: {PURGE: frozenset({PURGED})},
        PURGED: {},
    }
)

OPEN_STAGES: Final = (LEAD, QUALIFICATION, PROPOSAL, NEGOTIATION)
CLOSED_STAGES: Final = (WON, LOST)

DEFAULT_PROBABILITY: Final[Mapping[Stage, int]] = MappingProxyType(
    {LEAD: 10, QUALIFICATION: 30, PROPOSAL: 50, NEGOTIATION: 70, WON: 100, LOST: 0}
)

# Stages a person reaches through the stage endpoint: a move, or a loss with a reason.
HAND_TRIGGERS: Final = (MOVE, LOSE)


def is_open(stage: Stage) -> bool:
    return stage in OPEN_STAGES


def targets(stage: Stage, triggers: Iterable[Trigger]) -> list[Stage]:
    """The stages reachable from `stage` by any of `triggers`, in pipeline order."""
    reachable: set[Stage] = set()
    for trigger in triggers:
        reachable |= TRANSITIONS[stage].get(trigger, frozenset())
    return [s for s in Stage if s in reachable]


HAND_TARGETS: Final[Mapping[Stage, tuple[Stage, ...]]] = MappingProxyType(
    {stage: tuple(targets(stage, HAND_TRIGGERS)) for stage in TRANSITIONS}
)
"""What a person may move a deal to from each stage (every response lists it): worked
out once, since walking the stages costs a Python call per stage to hash each one."""


def allows(stage: Stage, trigger: Trigger, target: Stage) -> bool:
    return target in TRANSITIONS[stage].get(trigger, frozenset())


def mermaid_diagram() -> str:
    """The machine as a Mermaid state diagram, generated so it cannot drift from the table."""
    lines = ["stateDiagram-v2", "    [*] --> lead"]
    for source, by_trigger in TRANSITIONS.items():
        for trigger, reachable in by_trigger.items():
            for target in sorted(reachable, key=list(Stage).index):
                lines.append(f"    {source.value} --> {target.value}: {trigger.value}")
    lines.append("    purged --> [*]")
    return "\n".join(lines) + "\n"
