"""The deal's next action: set by hand, planned by a sequence step, or its earliest open
task's due date; a person's word is kept while it lies ahead (domain.next_action)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from dealflow_common.contracts.opportunity import NextAction, OpportunityUpdated, Stage
from dealflow_opportunity.domain.model import Opportunity, OpportunityChanges
from dealflow_opportunity.domain.next_action import NextActionSource, OpenTask

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
SOURCE = "/dealflow/sequence"
OpportunityAt = Callable[..., Opportunity]


def task(title: str, due: datetime) -> OpenTask:
    return OpenTask(uuid.uuid4(), title, due)


def by_hand(deal: Opportunity, action: NextAction | None, now: datetime = NOW) -> None:
    deal.update(OpportunityChanges(next_action=action), "alice", now)
    deal.events.clear()


def updates(deal: Opportunity) -> list[OpportunityUpdated]:
    return [e for e in deal.events if isinstance(e, OpportunityUpdated)]


def test_the_earliest_open_task_becomes_the_next_action(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.PROPOSAL, version=3)
    deal.follow_tasks(task("Call the CFO", NOW + timedelta(days=2)), NOW)

    assert deal.next_action == NextAction(date=date(2026, 11, 26), note="Call the CFO")
    assert deal.next_action_source == NextActionSource.TASK
    assert deal.version == 4
    (update,) = updates(deal)
    assert (update.changed_fields, update.updated_by) == (["next_action"], "system:sequence")
    assert update.opportunity.next_action == deal.next_action


def test_the_same_earliest_task_again_changes_nothing(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.PROPOSAL, version=3)
    earliest = task("Call", NOW + timedelta(days=2))
    deal.follow_tasks(earliest, NOW)
    deal.events.clear()
    deal.version_bumped = False

    deal.follow_tasks(earliest, NOW + timedelta(hours=1))
    assert (deal.version, deal.events) == (4, [])


def test_an_overdue_open_task_is_still_the_next_action(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.PROPOSAL)
    deal.follow_tasks(task("Send the contract", NOW - timedelta(days=3)), NOW)
    assert deal.next_action == NextAction(date=date(2026, 11, 21), note="Send the contract")


def test_when_the_last_open_task_is_done_the_next_action_from_tasks_goes(
    opportunity_at: OpportunityAt,
) -> None:
    deal = opportunity_at(Stage.PROPOSAL)
    deal.follow_tasks(task("Call", NOW + timedelta(days=1)), NOW)
    deal.follow_tasks(None, NOW)
    assert (deal.next_action, deal.next_action_source) == (None, None)
    assert [u.opportunity.next_action for u in updates(deal)][-1] is None


def test_a_next_action_set_by_hand_is_kept_while_it_lies_ahead(
    opportunity_at: OpportunityAt,
) -> None:
    deal = opportunity_at(Stage.PROPOSAL)
    friday = NextAction(date=TODAY + timedelta(days=4), note="Send the contract")
    by_hand(deal, friday)
    assert deal.next_action_source == NextActionSource.HAND

    deal.follow_tasks(task("Call", NOW + timedelta(days=1)), NOW)
    deal.follow_tasks(task("Call", NOW + timedelta(days=1)), NOW + timedelta(days=4))
    assert deal.next_action == friday  # its day is today: still ahead
    assert updates(deal) == []

    later = NOW + timedelta(days=5)
    deal.follow_tasks(task("Call", NOW + timedelta(days=1)), later)
    assert deal.next_action == NextAction(date=TODAY + timedelta(days=1), note="Call")
    assert deal.next_action_source == NextActionSource.TASK


def test_a_passed_next_action_set_by_hand_stays_while_no_task_is_open(
    opportunity_at: OpportunityAt,
) -> None:
    deal = opportunity_at(Stage.PROPOSAL)
    monday = NextAction(date=TODAY, note="Call back")
    by_hand(deal, monday)
    deal.follow_tasks(None, NOW + timedelta(days=3))
    assert (deal.next_action, deal.next_action_source) == (monday, NextActionSource.HAND)


def test_cleared_by_hand_the_next_action_falls_back_to_the_earliest_open_task(
    opportunity_at: OpportunityAt,
) -> None:
    deal = opportunity_at(Stage.PROPOSAL, version=3)
    by_hand(deal, NextAction(date=TODAY + timedelta(days=9)))
    deal.version_bumped = False

    earliest = task("Demo", NOW + timedelta(days=2))
    deal.update(OpportunityChanges(next_action=None), "alice", NOW, earliest)
    assert deal.next_action == NextAction(date=TODAY + timedelta(days=2), note="Demo")
    assert deal.next_action_source == NextActionSource.TASK
    (update,) = updates(deal)
    assert (update.changed_fields, update.updated_by) == (["next_action"], "alice")

    deal.update(OpportunityChanges(next_action=None), "alice", NOW, None)
    assert (deal.next_action, deal.next_action_source) == (None, None)


def test_setting_by_hand_what_the_tasks_show_makes_it_the_persons(
    opportunity_at: OpportunityAt,
) -> None:
    deal = opportunity_at(Stage.PROPOSAL)
    deal.follow_tasks(task("Demo", NOW + timedelta(days=2)), NOW)
    deal.events.clear()
    version = deal.version
    deal.bookkeeping_changed = False

    by_hand(deal, NextAction(date=TODAY + timedelta(days=2), note="Demo"))
    assert deal.next_action_source == NextActionSource.HAND
    assert deal.version == version  # nothing a subscriber sees changed
    assert deal.bookkeeping_changed


def test_a_sequence_step_plans_the_next_action_and_keeps_it_while_ahead(
    opportunity_at: OpportunityAt,
) -> None:
    deal = opportunity_at(Stage.PROPOSAL)
    chase = NextAction(date=TODAY + timedelta(days=3), note="Chase the PO")
    deal.plan_next_action(chase, NOW, source=SOURCE, sequence=7)
    assert (deal.next_action, deal.next_action_source) == (chase, NextActionSource.SEQUENCE)
    assert updates(deal)[-1].updated_by == "system:sequence"

    deal.follow_tasks(task("Call", NOW + timedelta(days=1)), NOW)
    assert deal.next_action == chase
    deal.follow_tasks(task("Call", NOW + timedelta(days=1)), NOW + timedelta(days=4))
    assert deal.next_action_source == NextActionSource.TASK


def test_an_older_step_read_late_changes_nothing(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.PROPOSAL)
    newer = NextAction(date=TODAY + timedelta(days=5), note="Second")
    deal.plan_next_action(newer, NOW, source=SOURCE, sequence=9)
    deal.plan_next_action(
        NextAction(date=TODAY + timedelta(days=2), note="First"), NOW, source=SOURCE, sequence=8
    )
    deal.plan_next_action(newer, NOW, source=SOURCE, sequence=9)
    assert deal.next_action == newer
    assert len(updates(deal)) == 1


def test_a_step_does_not_override_a_next_action_a_person_set_that_lies_ahead(
    opportunity_at: OpportunityAt,
) -> None:
    deal = opportunity_at(Stage.PROPOSAL)
    mine = NextAction(date=TODAY + timedelta(days=1), note="Lunch with the buyer")
    by_hand(deal, mine)
    deal.plan_next_action(
        NextAction(date=TODAY + timedelta(days=3), note="Chase"), NOW, source=SOURCE, sequence=4
    )
    assert (deal.next_action, updates(deal)) == (mine, [])
    assert deal.steps_applied.by_field == {"next_action": 4}  # read, and not read again

    later = NOW + timedelta(days=2)
    deal.plan_next_action(
        NextAction(date=TODAY + timedelta(days=5), note="Chase"), later, source=SOURCE, sequence=6
    )
    assert deal.next_action == NextAction(date=TODAY + timedelta(days=5), note="Chase")


def test_a_closed_deal_gets_no_next_action(opportunity_at: OpportunityAt) -> None:
    deal = opportunity_at(Stage.NEGOTIATION)
    deal.follow_tasks(task("Call", NOW + timedelta(days=1)), NOW)
    deal.lose("budget", "alice", NOW)
    assert (deal.next_action, deal.next_action_source) == (None, None)
    deal.events.clear()

    deal.follow_tasks(task("Call", NOW + timedelta(days=1)), NOW)
    deal.plan_next_action(NextAction(date=TODAY), NOW, source=SOURCE, sequence=3)
    assert (deal.next_action, deal.events) == (None, [])
