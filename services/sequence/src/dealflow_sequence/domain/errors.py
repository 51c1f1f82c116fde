"""The sequence service's business refusals, named for the rule they enforce."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from dealflow_common.errors import Conflict, NotFound, TransitionNotAllowed


class SequenceNotFound(NotFound):
    def __init__(self, sequence_id: UUID) -> None:
        super().__init__("sequence", sequence_id)


class EnrollmentNotFound(NotFound):
    def __init__(self, enrollment_id: UUID) -> None:
        super().__init__("enrollment", enrollment_id)


class TaskNotFound(NotFound):
    def __init__(self, task_id: UUID) -> None:
        super().__init__("task", task_id)


class OpportunityNotFound(NotFound):
    """Unknown here, or not visible to the caller: both answer 404."""

    def __init__(self, opportunity_id: UUID) -> None:
        super().__init__("opportunity", opportunity_id)


class SequenceRetired(Conflict):
    def __init__(self, sequence_id: UUID, attempted: str) -> None:
        super().__init__(f"sequence {sequence_id} is retired: it cannot {attempted}")


class AlreadyEnrolled(Conflict):
    def __init__(self, opportunity_id: UUID, sequence_id: UUID, enrollment_id: UUID) -> None:
        super().__init__(
            f"opportunity {opportunity_id} is already in sequence {sequence_id} "
            f"(enrollment {enrollment_id})"
        )


class DealClosed(Conflict):
    def __init__(self, opportunity_id: UUID, stage: str) -> None:
        super().__init__(f"opportunity {opportunity_id} is {stage}: it takes no follow-ups")


class EnrollmentActionNotAllowed(TransitionNotAllowed):
    def __init__(self, state: str, attempted: str, allowed: Sequence[str]) -> None:
        super().__init__("enrollment", state, attempted, allowed)


class TaskActionNotAllowed(TransitionNotAllowed):
    def __init__(self, state: str, attempted: str, allowed: Sequence[str]) -> None:
        super().__init__("task", state, attempted, allowed)
