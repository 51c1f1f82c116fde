"""The Opportunity aggregate: one sales process from first lead to won or lost.

Every command checks its rule, changes the state, bumps `version` and records what it
caused: the published events (the contracts of `dealflow.opportunity.events`, as the
domain of FTGO returns its api module's events) and the append-only entries of the
sales history, notes and assignment history. The repository writes those entries and
the unit of work writes the events to the outbox in the same transaction.

The next action also follows the deal's follow-up tasks and sequence steps (the events
of the sequence service); which value wins is `domain.next_action`'s rule.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any, Final, Literal, TypeAlias
from uuid import UUID

from dealflow_common.auth import Principal
from dealflow_common.contracts.base import EventPayload
from dealflow_common.contracts.money import Money
from dealflow_common.contracts.opportunity import (
    Address,
    Competitor,
    Contact,
    Customer,
    CustomFieldValue,
    DealContact,
    DecisionIssue,
    LeadOrigin,
    NextAction,
    NoteReason,
    OpportunityAcceptanceRefused,
    OpportunityAssigned,
    OpportunityCreated,
    OpportunityLost,
    OpportunityNoteAdded,
    OpportunityShared,
    OpportunityStageChanged,
    OpportunityState,
    OpportunityUnshared,
    OpportunityUpdated,
    OpportunityWon,
    Share,
    Stage,
)
from dealflow_common.contracts.sequence import SEQUENCE_ACTOR
from dealflow_common.contracts.trusted import trusted
from dealflow_common.copying import shallow_copy
from dealflow_common.errors import StaleVersion
from dealflow_common.messaging.projection import AppliedSequences
from dealflow_opportunity.domain import next_action as next_actions
from dealflow_opportunity.domain import stages
from dealflow_opportunity.domain.errors import (
    ContactNotForIndividuals,
    ExpectedCloseDateInPast,
    LastOwnerCannotLeave,
    LostReasonRequired,
    NoOwnerNorTeam,
    NotAnOwner,
    OpportunityClosed,
    RecordNotFound,
    ResolutionRequired,
    ShareNotFound,
    SharingWithYourself,
    StageMoveNotAllowed,
)
from dealflow_opportunity.domain.next_action import NextActionSource, OpenTask
from dealflow_opportunity.domain.stages import Trigger


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


@dataclass(frozen=True, slots=True)
class OpportunityChanges:
    """The fields an update sets; a field left UNSET keeps its value, None clears it."""

    title: str | _Unset = UNSET
    description: str | _Unset | None = UNSET
    customer: Customer | _Unset = UNSET
    contact: Contact | _Unset | None = UNSET
    contact_address: Address | _Unset | None = UNSET
    value: Money | _Unset = UNSET
    probability: int | _Unset = UNSET
    expected_close_date: date | _Unset | None = UNSET
    next_action: NextAction | _Unset | None = UNSET
    lead_origin: LeadOrigin | _Unset | None = UNSET
    external_reference: str | _Unset | None = UNSET
    custom_fields: dict[str, CustomFieldValue] | _Unset = UNSET
    """All of the deal's values after the change (`domain.custom_fields` merges them)."""

    def given(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not isinstance(getattr(self, f.name), _Unset)
        }


@dataclass(frozen=True, slots=True)
class SalesHistoryEntry:
    """One stage move, as a sales manager reads it in a pipeline review."""

    from_stage: Stage | None
    to_stage: Stage
    changed_at: datetime
    changed_by: str
    days_in_previous_stage: float | None
    owners: tuple[str, ...]
    probability: int


@dataclass(frozen=True, slots=True)
class Note:
    id: UUID
    reason: NoteReason
    text: str
    added_by: str
    added_at: datetime


@dataclass(frozen=True, slots=True)
class AssignmentEntry:
    action: str
    user_id: str | None
    team_id: str | None
    owners: tuple[str, ...]
    assigned_by: str
    assigned_at: datetime


@dataclass(eq=False)
class Opportunity:
    id: UUID
    title: str
    description: str | None
    customer: Customer
    contact: Contact | None
    contact_address: Address | None
    value: Money
    stage: Stage
    probability: int
    expected_close_date: date | None
    next_action: NextAction | None
    lead_origin: LeadOrigin | None
    external_reference: str | None
    owners: list[str]
    team_id: str | None
    won_quote_id: UUID | None
    order_id: UUID | None
    lost_reason: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    stage_entered_at: datetime
    closed_at: datetime | None
    version: int
    next_action_source: NextActionSource | None = None
    """Where `next_action` came from (by hand, a sequence step, the open tasks)."""
    steps_applied: AppliedSequences = field(default_factory=AppliedSequences)
    """The sequence of the last `sequence.step_executed` that planned the next action,
    so that a late one never overrides a newer one."""
    shares: list[Share] = field(default_factory=list)
    """The Sharing tab: users and teams who may read or edit the deal besides its owners
    and team, oldest first."""
    custom_fields: dict[str, CustomFieldValue] = field(default_factory=dict)
    """Values of the admin-defined fields, checked by `domain.custom_fields`."""
    competitors: list[Competitor] = field(default_factory=list)
    decision_issues: list[DecisionIssue] = field(default_factory=list)
    contacts: list[DealContact] = field(default_factory=list)
    """People at the customer with their part in the decision (beside `contact`)."""

    events: list[EventPayload] = field(default_factory=list, repr=False)
    new_history: list[SalesHistoryEntry] = field(default_factory=list, repr=False)
    new_notes: list[Note] = field(default_factory=list, repr=False)
    new_assignments: list[AssignmentEntry] = field(default_factory=list, repr=False)
    owners_changed: bool = field(default=False, repr=False)
    shares_changed: bool = field(default=False, repr=False)
    version_bumped: bool = field(default=False, repr=False)
    bookkeeping_changed: bool = field(default=False, repr=False)
    """`next_action_source` or `steps_applied` changed: saved even without a new version."""

    # --- creation -------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        *,
        title: str,
        customer: Customer,
        value: Money,
        by: str,
        now: datetime,
        opportunity_id: UUID | None = None,
        description: str | None = None,
        contact: Contact | None = None,
        contact_address: Address | None = None,
        probability: int | None = None,
        expected_close_date: date | None = None,
        next_action: NextAction | None = None,
        lead_origin: LeadOrigin | None = None,
        external_reference: str | None = None,
        owners: list[str] | None = None,
        team_id: str | None = None,
        custom_fields: dict[str, CustomFieldValue] | None = None,
    ) -> Opportunity:
        """A new deal in `lead`, owned by its creator unless `owners` says otherwise;
        `owners=[]` with a team puts it in the team's queue until a rep claims it."""
        _check_contact(customer, contact)
        _check_close_date(expected_close_date, stages.LEAD, now)
        if owners is None:
            owners = [by]
        if not owners and team_id is None:
            raise NoOwnerNorTeam()
        opportunity = cls(
            id=opportunity_id or uuid.uuid4(),
            title=title,
            description=description,
            customer=customer,
            contact=contact,
            contact_address=contact_address,
            value=value,
            stage=stages.LEAD,
            probability=(
                probability if probability is not None else stages.DEFAULT_PROBABILITY[stages.LEAD]
            ),
            expected_close_date=expected_close_date,
            next_action=next_action,
            lead_origin=lead_origin,
            external_reference=external_reference,
            owners=list(dict.fromkeys(owners)),
            team_id=team_id,
            won_quote_id=None,
            order_id=None,
            lost_reason=None,
            created_by=by,
            created_at=now,
            updated_at=now,
            stage_entered_at=now,
            closed_at=None,
            version=1,
            next_action_source=NextActionSource.HAND if next_action else None,
            custom_fields=dict(custom_fields or {}),
        )
        opportunity.owners_changed = True
        opportunity.version_bumped = True  # version 1 is the creation itself
        opportunity.new_history.append(
            SalesHistoryEntry(
                None, stages.LEAD, now, by, None, tuple(opportunity.owners), opportunity.probability
            )
        )
        opportunity.events.append(
            OpportunityCreated(opportunity_id=opportunity.id, opportunity=opportunity.state())
        )
        return opportunity

    # --- queries --------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return stages.is_open(self.stage)

    def allowed_moves(self) -> list[Stage]:
        """What a person may move this deal to now (the stage endpoint's choices)."""
        return list(stages.HAND_TARGETS[self.stage])

    def state(self) -> OpportunityState:
        """The deal as its events carry it. Built as it is, not validated again: every
        field was validated on its way in (a request's body, a row, an event) and the
        rules change them only to valid values; validating 27 fields cost a change
        86,000 instructions (`make bench-instructions`)."""
        return trusted(OpportunityState, self.state_fields())

    def state_fields(self) -> dict[str, Any]:
        """`state()`'s fields by name, its lists and custom fields copies of the deal's:
        what the API's view of the deal is built from too, without a model between."""
        return dict(
            id=self.id,
            title=self.title,
            description=self.description,
            customer=self.customer,
            contact=self.contact,
            contact_address=self.contact_address,
            value=self.value,
            stage=self.stage,
            probability=self.probability,
            expected_close_date=self.expected_close_date,
            next_action=self.next_action,
            lead_origin=self.lead_origin,
            external_reference=self.external_reference,
            owners=list(self.owners),
            team_id=self.team_id,
            won_quote_id=self.won_quote_id,
            order_id=self.order_id,
            lost_reason=self.lost_reason,
            created_by=self.created_by,
            created_at=self.created_at,
            updated_at=self.updated_at,
            closed_at=self.closed_at,
            version=self.version,
            shares=list(self.shares),
            custom_fields=dict(self.custom_fields),
            competitors=list(self.competitors),
            decision_issues=list(self.decision_issues),
            contacts=list(self.contacts),
        )

    def snapshot(self) -> Opportunity:
        """A copy to change apart from this one, with nothing pending: its lists and maps
        are its own (what they hold is immutable), its version not yet moved."""
        twin = shallow_copy(self)
        twin.owners = list(self.owners)
        twin.shares = list(self.shares)
        twin.custom_fields = dict(self.custom_fields)
        twin.competitors = list(self.competitors)
        twin.decision_issues = list(self.decision_issues)
        twin.contacts = list(self.contacts)
        twin.events = []
        twin.new_history = []
        twin.new_notes = []
        twin.new_assignments = []
        twin.owners_changed = False
        twin.shares_changed = False
        twin.version_bumped = False
        twin.bookkeeping_changed = False
        return twin

    def check_version(self, expected: int | None) -> None:
        """Refuse a change made against an older version (`If-Match`)."""
        if expected is not None and expected != self.version:
            raise StaleVersion("opportunity", expected, self.version)

    # --- commands -------------------------------------------------------------------

    def update(
        self,
        changes: OpportunityChanges,
        by: str,
        now: datetime,
        earliest_open_task: OpenTask | None = None,
    ) -> None:
        """Set the given fields. A next action given is the person's (kept while it lies
        ahead); one cleared gives way to the earliest open task, if any."""
        given = changes.given()
        if not self.is_open:
            raise OpportunityClosed(self.id, self.stage, "updated")
        customer = given.get("customer", self.customer)
        contact = given.get("contact", self.contact)
        _check_contact(customer, contact)
        if "expected_close_date" in given:
            _check_close_date(given["expected_close_date"], self.stage, now)
        if "next_action" in given:
            given["next_action"], source = next_actions.after_hand(
                given["next_action"], earliest_open_task
            )
            self._set_next_action_source(source)
        changed = [name for name, value in given.items() if getattr(self, name) != value]
        if not changed:
            return
        for name in changed:
            setattr(self, name, given[name])
        self._touch(now)
        self.events.append(
            OpportunityUpdated(
                opportunity_id=self.id,
                opportunity=self.state(),
                changed_fields=sorted(changed),
                updated_by=by,
            )
        )

    def move_to(
        self,
        target: Stage,
        by: str,
        now: datetime,
        *,
        probability: int | None = None,
        lost_reason: str | None = None,
    ) -> None:
        """A hand move through the stage endpoint; `closed_lost` needs a lost reason."""
        if target == stages.LOST:
            if not lost_reason:
                raise LostReasonRequired("lost_reason")
            self.lose(lost_reason, by, now)
            return
        self._require(Trigger.MOVE, target, "move to " + target.value)
        self._enter(target, by, now, probability)
        if target == stages.WON:
            self._record_win(None, by, now)

    def lose(self, reason: str, by: str, now: datetime, note: str | None = None) -> None:
        if not reason.strip():
            raise LostReasonRequired()
        self._require(Trigger.LOSE, stages.LOST, "be lost")
        self.lost_reason = reason
        self._enter(stages.LOST, by, now, None)
        if note:
            self.add_note(NoteReason.LOST, note, by, now)
        self.events.append(
            OpportunityLost(
                opportunity_id=self.id, reason=reason, lost_by=by, lost_at=now, version=self.version
            )
        )

    def accept_quote(
        self,
        quote_id: UUID,
        by: str,
        now: datetime,
        quote_total: Money | None = None,
        answer_by: datetime | None = None,
    ) -> bool:
        """The customer accepted a quote. The opportunity is the authority on the outcome:
        an open deal with no accepted quote is won; otherwise the acceptance is refused,
        which is an expected outcome (an event), not an error. Returns whether it won.

        The quote service asks again when it hears no answer by `answer_by`, and stops
        waiting after its last attempt. So the quote that already won is answered won
        again (changing nothing), and a request read after its `answer_by` is left
        unanswered: a deal is never won by a quote that was told it was not.
        """
        if self.won_quote_id == quote_id:
            self._record_win(quote_id, by, self.closed_at or now, quote_total, repeated=True)
            return True
        if answer_by is not None and now > answer_by:
            return False
        if not stages.allows(self.stage, Trigger.ACCEPT_QUOTE, stages.WON):
            reason = (
                f"won by another quote ({self.won_quote_id})"
                if self.won_quote_id
                else f"the opportunity is {self.stage.value}"
            )
            self.events.append(
                OpportunityAcceptanceRefused(
                    opportunity_id=self.id, quote_id=quote_id, reason=reason, stage=self.stage
                )
            )
            return False
        self.won_quote_id = quote_id
        self._enter(stages.WON, by, now, None)
        self._record_win(quote_id, by, now, quote_total)
        return True

    def follow_tasks(self, earliest_open_task: OpenTask | None, now: datetime) -> None:
        """The deal's open tasks changed (`task.created`, `task.completed`); the earliest
        is due first, None when none is left open."""
        if not self.is_open:
            return
        value, source = next_actions.after_tasks_changed(
            self.next_action, self.next_action_source, earliest_open_task, now.date()
        )
        self._set_next_action(value, source, now)

    def plan_next_action(
        self, planned: NextAction, now: datetime, *, source: str, sequence: int
    ) -> None:
        """A sequence's `next_action` step ran (`sequence.step_executed` numbered
        `sequence` by `source`); an older step than one applied already changes nothing."""
        verdict = self.steps_applied.offer(
            source=source, sequence=sequence, carried=("next_action",)
        )
        if not verdict.fields:
            return
        self.steps_applied = verdict.applied
        self.bookkeeping_changed = True
        if not self.is_open:
            return
        value, origin = next_actions.after_step(
            self.next_action, self.next_action_source, planned, now.date()
        )
        self._set_next_action(value, origin, now)

    def record_order(self, order_id: UUID, now: datetime) -> None:
        """The order created from the won quote; recorded once, later copies ignored."""
        if self.order_id is not None:
            return
        self.order_id = order_id
        self._touch(now)
        self.events.append(
            OpportunityUpdated(
                opportunity_id=self.id,
                opportunity=self.state(),
                changed_fields=["order_id"],
                updated_by="system:order",
            )
        )

    def add_note(self, reason: NoteReason, text: str, by: str, now: datetime) -> Note:
        note = Note(uuid.uuid4(), reason, text, by, now)
        self.new_notes.append(note)
        self._touch(now)
        self.events.append(
            OpportunityNoteAdded(
                opportunity_id=self.id,
                note_id=note.id,
                reason=reason,
                text=text,
                added_by=by,
                added_at=now,
            )
        )
        return note

    def assign(self, user_id: str, by: str, now: datetime) -> None:
        if user_id in self.owners:
            return
        self._require_open("be assigned")
        self.owners.append(user_id)
        self._assignment("assigned", user_id, by, now)

    def claim(self, principal: Principal, now: datetime) -> None:
        """The caller takes the deal from their team's queue (or joins its owners)."""
        if principal.user_id in self.owners:
            return
        self._require_open("be claimed")
        self.owners.append(principal.user_id)
        self._assignment("claimed", principal.user_id, principal.user_id, now)

    def unassign(self, user_id: str, by: str, now: datetime) -> None:
        if user_id not in self.owners:
            raise NotAnOwner(self.id, user_id)
        self._require_open("be unassigned")
        if len(self.owners) == 1 and self.team_id is None:
            raise LastOwnerCannotLeave(self.id, user_id)
        self.owners.remove(user_id)
        self._assignment("unassigned", user_id, by, now)

    def assign_team(self, team_id: str, by: str, now: datetime) -> None:
        """Hand the deal to a team; it waits in the team's queue until a rep claims it."""
        if team_id == self.team_id and not self.owners:
            return
        self._require_open("move to another team")
        self.team_id = team_id
        self.owners.clear()
        self._assignment("team_assigned", None, by, now)

    def share(self, share: Share, by: str, now: datetime) -> None:
        """Share the deal with a user or a team, or change the grant of their share.
        Sharing again with the same grant changes nothing."""
        if share.kind == "user" and share.id == by:
            raise SharingWithYourself(by)
        kept = [s for s in self.shares if (s.kind, s.id) != (share.kind, share.id)]
        if len(kept) < len(self.shares) and share in self.shares:
            return
        self.shares = [*kept, share]
        self.shares_changed = True
        self._touch(now)
        self.events.append(
            OpportunityShared(
                opportunity_id=self.id,
                share=share,
                shares=list(self.shares),
                shared_by=by,
                shared_at=now,
                version=self.version,
            )
        )

    def unshare(self, kind: str, holder: str, by: str, now: datetime) -> None:
        """Revoke the share of the user or team `holder`; one that does not exist is an
        error, so that a mistyped name is not taken for a revocation."""
        revoked = next((s for s in self.shares if (s.kind, s.id) == (kind, holder)), None)
        if revoked is None:
            raise ShareNotFound(self.id, kind, holder)
        self.shares = [s for s in self.shares if s is not revoked]
        self.shares_changed = True
        self._touch(now)
        self.events.append(
            OpportunityUnshared(
                opportunity_id=self.id,
                share=revoked,
                shares=list(self.shares),
                unshared_by=by,
                unshared_at=now,
                version=self.version,
            )
        )

    # --- internals ------------------------------------------------------------------

    # --- the deal's records: competitors, decision issues, contacts ---------------------

    def add_record(self, kind: RecordKind, record: DealRecord, by: str, now: datetime) -> None:
        """Add a competitor, a decision issue or a contact; published as
        `opportunity.updated` with `kind` as the changed field. Kept on closed deals
        too: who a deal was lost to is learnt after it is lost."""
        _check_record(record)
        records: list[Any] = getattr(self, kind)
        records.append(record)
        self._records_changed(kind, by, now)

    def replace_record(self, kind: RecordKind, record: DealRecord, by: str, now: datetime) -> None:
        _check_record(record)
        records: list[Any] = getattr(self, kind)
        position = self._position_of(kind, record.id)
        if records[position] == record:
            return
        records[position] = record
        self._records_changed(kind, by, now)

    def remove_record(self, kind: RecordKind, record_id: UUID, by: str, now: datetime) -> None:
        records: list[Any] = getattr(self, kind)
        del records[self._position_of(kind, record_id)]
        self._records_changed(kind, by, now)

    def record(self, kind: RecordKind, record_id: UUID) -> DealRecord:
        record: DealRecord = getattr(self, kind)[self._position_of(kind, record_id)]
        return record

    def _position_of(self, kind: RecordKind, record_id: UUID) -> int:
        for position, record in enumerate(getattr(self, kind)):
            if record.id == record_id:
                return position
        raise RecordNotFound(self.id, kind, record_id)

    def _records_changed(self, kind: RecordKind, by: str, now: datetime) -> None:
        self._touch(now)
        self.events.append(
            OpportunityUpdated(
                opportunity_id=self.id,
                opportunity=self.state(),
                changed_fields=[kind],
                updated_by=by,
            )
        )

    def _require(self, trigger: Trigger, target: Stage, attempted: str) -> None:
        if not stages.allows(self.stage, trigger, target):
            raise StageMoveNotAllowed(self.stage, attempted, self.allowed_moves())

    def _require_open(self, attempted: str) -> None:
        if not self.is_open:
            raise OpportunityClosed(self.id, self.stage, attempted)

    def _enter(self, target: Stage, by: str, now: datetime, probability: int | None) -> None:
        previous, entered = self.stage, self.stage_entered_at
        days = round((now - entered).total_seconds() / 86400, 3)
        self.stage = target
        self.stage_entered_at = now
        if target in stages.CLOSED_STAGES:
            # A closed deal's chance is known: won is certain, lost is nothing.
            self.probability = stages.DEFAULT_PROBABILITY[target]
            self.closed_at = now
            self.next_action = None
            self._set_next_action_source(None)
        else:
            self.probability = (
                probability if probability is not None else stages.DEFAULT_PROBABILITY[target]
            )
        self._touch(now)
        self.new_history.append(
            SalesHistoryEntry(previous, target, now, by, days, tuple(self.owners), self.probability)
        )
        self.events.append(
            OpportunityStageChanged(
                opportunity_id=self.id,
                from_stage=previous,
                to_stage=target,
                probability=self.probability,
                changed_by=by,
                changed_at=now,
                days_in_previous_stage=days,
                owners=list(self.owners),
                version=self.version,
            )
        )

    def _record_win(
        self,
        quote_id: UUID | None,
        by: str,
        now: datetime,
        quote_total: Money | None = None,
        *,
        repeated: bool = False,
    ) -> None:
        self.events.append(
            OpportunityWon(
                opportunity_id=self.id,
                won_quote_id=quote_id,
                value=self.value,
                quote_total=quote_total,
                won_by=by,
                won_at=now,
                version=self.version,
                repeated=repeated,
            )
        )

    def _assignment(self, action: str, user_id: str | None, by: str, now: datetime) -> None:
        self.owners_changed = True
        self._touch(now)
        self.new_assignments.append(
            AssignmentEntry(action, user_id, self.team_id, tuple(self.owners), by, now)
        )
        self.events.append(
            OpportunityAssigned(
                opportunity_id=self.id,
                action=action,
                user_id=user_id,
                owners=list(self.owners),
                team_id=self.team_id,
                assigned_by=by,
                assigned_at=now,
                version=self.version,
            )
        )

    def _set_next_action_source(self, source: NextActionSource | None) -> None:
        if source != self.next_action_source:
            self.next_action_source = source
            self.bookkeeping_changed = True

    def _set_next_action(
        self, value: NextAction | None, source: NextActionSource | None, now: datetime
    ) -> None:
        """Automation's change of the next action, published as `opportunity.updated`."""
        self._set_next_action_source(source)
        if value == self.next_action:
            return
        self.next_action = value
        self._touch(now)
        self.events.append(
            OpportunityUpdated(
                opportunity_id=self.id,
                opportunity=self.state(),
                changed_fields=["next_action"],
                updated_by=SEQUENCE_ACTOR,
            )
        )

    def _touch(self, now: datetime) -> None:
        # One command is one new version, however many parts of the deal it changes.
        if not self.version_bumped:
            self.version += 1
            self.version_bumped = True
        self.updated_at = now


RecordKind: TypeAlias = Literal["competitors", "decision_issues", "contacts"]
DealRecord: TypeAlias = Competitor | DecisionIssue | DealContact


def _check_record(record: DealRecord) -> None:
    resolved = isinstance(record, DecisionIssue) and record.status == "resolved"
    if resolved and not (getattr(record, "resolution", None) or "").strip():
        raise ResolutionRequired()


def _check_contact(customer: Customer, contact: Contact | None) -> None:
    if customer.kind == "individual" and contact is not None:
        raise ContactNotForIndividuals()


def _check_close_date(expected: date | None, stage: Stage, now: datetime) -> None:
    if expected is not None and stages.is_open(stage) and expected < now.date():
        raise ExpectedCloseDateInPast(expected, now.date())
