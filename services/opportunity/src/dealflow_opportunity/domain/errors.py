"""The opportunity's business refusals, named for the rule they enforce."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from uuid import UUID

from dealflow_common.contracts.opportunity import Stage
from dealflow_common.errors import Conflict, NotFound, RuleViolated, TransitionNotAllowed


class OpportunityNotFound(NotFound):
    def __init__(self, opportunity_id: UUID) -> None:
        super().__init__("opportunity", opportunity_id)


class StageMoveNotAllowed(TransitionNotAllowed):
    def __init__(self, stage: Stage, attempted: str, allowed: Sequence[Stage]) -> None:
        why = ""
        if stage in (Stage.CLOSED_WON, Stage.CLOSED_LOST):
            why = "a closed opportunity ends its sales process"
        elif attempted == "move to closed_won":
            why = "a deal is won by hand only from negotiation, or by an accepted quote"
        else:
            why = "forward moves go one stage at a time"
        super().__init__("opportunity", stage.value, attempted, [s.value for s in allowed], why)


class OpportunityClosed(Conflict):
    def __init__(self, opportunity_id: UUID, stage: Stage, attempted: str) -> None:
        super().__init__(
            f"opportunity {opportunity_id} is {stage.value} and cannot {attempted}; "
            "notes can still be added"
        )


class LostReasonRequired(RuleViolated):
    def __init__(self, field: str = "reason") -> None:
        super().__init__(field, "closing as lost requires a lost reason")


class ExpectedCloseDateInPast(RuleViolated):
    def __init__(self, expected: date, today: date) -> None:
        super().__init__(
            "expected_close_date",
            f"{expected.isoformat()} is in the past (today is {today.isoformat()}) "
            "and the opportunity is open",
        )


class ContactNotForIndividuals(RuleViolated):
    def __init__(self) -> None:
        super().__init__(
            "contact",
            "an individual customer is their own contact; give a contact_address instead",
        )


class NoOwnerNorTeam(RuleViolated):
    def __init__(self) -> None:
        super().__init__(
            "owners", "a deal needs at least one owner, or a team whose queue holds it"
        )


class NotAnOwner(Conflict):
    def __init__(self, opportunity_id: UUID, user_id: str) -> None:
        super().__init__(f"{user_id} does not own opportunity {opportunity_id}")


class LastOwnerCannotLeave(Conflict):
    def __init__(self, opportunity_id: UUID, user_id: str) -> None:
        super().__init__(
            f"{user_id} is the last owner of opportunity {opportunity_id} and it has no team; "
            "assign another owner or a team first"
        )


class SharingWithYourself(RuleViolated):
    def __init__(self, user_id: str) -> None:
        super().__init__("id", f"{user_id} cannot share a deal with themselves")


class ShareNotFound(NotFound):
    def __init__(self, opportunity_id: UUID, kind: str, holder: str) -> None:
        super().__init__("share", f"of opportunity {opportunity_id} with {kind} {holder}")


class RecordNotFound(NotFound):
    def __init__(self, opportunity_id: UUID, kind: str, record_id: UUID) -> None:
        entity = {"competitors": "competitor", "decision_issues": "decision issue"}.get(
            kind, "contact"
        )
        super().__init__(entity, f"{record_id} of opportunity {opportunity_id}")


class ResolutionRequired(RuleViolated):
    def __init__(self) -> None:
        super().__init__("resolution", "a resolved decision issue says how it was resolved")
