"""Every (state, trigger) pair of the enrollment machine, against a matrix written by hand.

The matrix is the rule as a sales manager would state it, kept apart from
`enrollment.TRANSITIONS` on purpose: the test fails if the table drifts from the rule.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from dealflow_common.contracts.opportunity import Stage
from dealflow_sequence.domain import enrollment as machine
from dealflow_sequence.domain.deal import KnownDeal
from dealflow_sequence.domain.definitions import SequenceDefinition
from dealflow_sequence.domain.enrollment import (
    Enrollment,
    EnrollmentState,
    EnrollmentTrigger,
)
from dealflow_sequence.domain.errors import EnrollmentActionNotAllowed

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

# Target state of each trigger, "." where the trigger is refused.
MATRIX = """
           run_step  finish     pause   resume  cancel     exit
active     active    completed  paused  .       cancelled  cancelled
paused     .         .          .       active  cancelled  cancelled
completed  .         .          .       .       .          .
cancelled  .         .          .       .       .          .
"""


def _matrix() -> dict[tuple[EnrollmentState, EnrollmentTrigger], str]:
    lines = [line.split() for line in MATRIX.strip().splitlines()]
    header = [EnrollmentTrigger(name) for name in lines[0]]
    return {
        (EnrollmentState(row[0]), trigger): mark
        for row in lines[1:]
        for trigger, mark in zip(header, row[1:], strict=True)
    }


CELLS = _matrix()


def test_the_matrix_covers_every_state_and_trigger() -> None:
    assert set(CELLS) == {(s, t) for s in EnrollmentState for t in EnrollmentTrigger}


def definition(steps: int) -> SequenceDefinition:
    return SequenceDefinition.define(
        name="Proposal follow-up",
        trigger={"event": "opportunity.stage_changed", "stage": "proposal"},
        steps=[{"after": "P1D", "action": "task", "title": f"Call {i}"} for i in range(steps)],
        exit_conditions=None,
        by="mia",
        now=NOW,
    )


def deal() -> KnownDeal:
    return KnownDeal(uuid.uuid4(), Stage.PROPOSAL, ["alice"], "emea", "alice", NOW)


def enrollment_in(state: EnrollmentState, sequence: SequenceDefinition) -> Enrollment:
    enrollment = Enrollment.start(sequence, uuid.uuid4(), by="alice", now=NOW)
    if state == EnrollmentState.PAUSED:
        enrollment.pause("alice", NOW)
    elif state == EnrollmentState.COMPLETED:
        while enrollment.is_live:
            enrollment.run_due_step(sequence, deal(), NOW + timedelta(days=10))
    elif state == EnrollmentState.CANCELLED:
        enrollment.cancel("by hand", "alice", NOW)
    enrollment.events.clear()
    return enrollment


def fire(enrollment: Enrollment, trigger: EnrollmentTrigger, sequence: SequenceDefinition) -> None:
    later = NOW + timedelta(days=5)
    if trigger in (EnrollmentTrigger.RUN_STEP, EnrollmentTrigger.FINISH):
        enrollment.run_due_step(sequence, deal(), later)
    elif trigger == EnrollmentTrigger.PAUSE:
        enrollment.pause("bob", later)
    elif trigger == EnrollmentTrigger.RESUME:
        enrollment.resume("bob", later)
    else:
        enrollment.cancel("why", "bob", later, by_hand=trigger == EnrollmentTrigger.CANCEL)


@pytest.mark.parametrize(("state", "trigger"), list(CELLS), ids=str)
def test_trigger(state: EnrollmentState, trigger: EnrollmentTrigger) -> None:
    # FINISH is the last step running; RUN_STEP one that leaves more to run.
    sequence = definition(1 if trigger == EnrollmentTrigger.FINISH else 3)
    enrollment = enrollment_in(state, sequence)
    expected = CELLS[(state, trigger)]
    if state == EnrollmentState.ACTIVE and trigger == EnrollmentTrigger.RUN_STEP:
        assert machine.TRANSITIONS[state][trigger] == EnrollmentState.ACTIVE
    if expected == ".":
        before = (enrollment.state, enrollment.version, enrollment.next_due_at)
        if trigger in (EnrollmentTrigger.RUN_STEP, EnrollmentTrigger.FINISH):
            assert trigger not in machine.TRANSITIONS[state]
            assert not enrollment.is_due(NOW + timedelta(days=5))
            return
        with pytest.raises(EnrollmentActionNotAllowed) as refused:
            fire(enrollment, trigger, sequence)
        assert refused.value.allowed == [
            t.value for t in machine.HAND_TRIGGERS if CELLS[(state, t)] != "."
        ]
        assert (enrollment.state, enrollment.version, enrollment.next_due_at) == before
        assert enrollment.events == []
    else:
        fire(enrollment, trigger, sequence)
        assert enrollment.state == EnrollmentState(expected)
        assert enrollment.events, "every move is published"


def test_a_paused_enrollment_keeps_the_time_left_and_goes_on_with_it() -> None:
    sequence = definition(2)
    enrollment = Enrollment.start(sequence, uuid.uuid4(), by="alice", now=NOW)
    assert enrollment.next_due_at == NOW + timedelta(days=1)
    enrollment.pause("alice", NOW + timedelta(hours=6))
    assert (enrollment.next_due_at, enrollment.remaining) == (None, timedelta(hours=18))
    enrollment.resume("alice", NOW + timedelta(days=3))
    assert enrollment.next_due_at == NOW + timedelta(days=3, hours=18)


def test_steps_fall_due_after_the_previous_step_ran() -> None:
    sequence = definition(2)
    enrollment = Enrollment.start(sequence, uuid.uuid4(), by="alice", now=NOW)
    late = NOW + timedelta(days=4)  # the service was down when the first step fell due
    outcome = enrollment.run_due_step(sequence, deal(), late)
    assert (outcome.run.step_no, outcome.run.due_at, outcome.run.executed_at) == (
        1,
        NOW + timedelta(days=1),
        late,
    )
    assert enrollment.next_due_at == late + timedelta(days=1)
    assert outcome.task is not None
    assert (outcome.task.assignee, outcome.task.title) == ("alice", "Call 0")


def test_an_enrollment_runs_only_its_own_version() -> None:
    sequence = definition(2)
    enrollment = Enrollment.start(sequence, uuid.uuid4(), by="alice", now=NOW)
    newer = sequence.revise(
        name="v2",
        trigger={"event": "opportunity.stage_changed", "stage": "proposal"},
        steps=[{"after": "PT1H", "action": "task", "title": "x"}],
        exit_conditions=None,
        now=NOW,
    )
    with pytest.raises(ValueError, match="version"):
        enrollment.run_due_step(newer, deal(), NOW + timedelta(days=2))
