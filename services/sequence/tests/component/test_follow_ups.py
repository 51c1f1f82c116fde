"""A deal entering a stage gets its follow-ups on time, visible on the deal and to its
owner; exits, pauses and restarts neither lose nor repeat a step."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from dealflow_common.contracts.opportunity import OpportunityPurged, Stage

MANAGER = {"user": "mia", "roles": ("manager",), "teams": ("emea",)}


async def test_a_stage_change_into_proposal_enrolls_and_the_first_task_appears_on_time(
    service,
) -> None:
    sequence = await service.define()
    deal = await service.deal()
    await service.move(deal, Stage.PROPOSAL)

    enrollment = await service.enrollment_of(deal, sequence["id"])
    assert (enrollment["state"], enrollment["sequence_version"]) == ("active", 1)
    (step,) = enrollment["steps"]
    assert step["state"] == "scheduled"
    assert "sequence.enrolled" in await service.types_of(deal)

    service.clock.advance(days=2, seconds=-1)
    await service.tick()
    assert await service.tasks_of(deal) == []

    service.clock.advance(seconds=1)
    assert await service.tick() >= 1
    (task,) = await service.tasks_of(deal)
    assert (task["title"], task["assignee"], task["state"], task["kind"]) == (
        "Call back",
        "alice",
        "open",
        "task",
    )
    mine = await service.call("GET", "/tasks?assignee=alice&state=open")
    assert task["id"] in [t["id"] for t in mine.json()]
    history = await service.enrollment_of(deal, sequence["id"])
    assert history["state"] == "completed"
    (ran,) = history["steps"]
    assert (ran["state"], ran["task_id"]) == ("done", task["id"])
    assert ran["executed_at"] is not None
    assert (await service.types_of(deal))[-3:] == [
        "task.created",
        "sequence.step_executed",
        "sequence.completed",
    ]


async def test_steps_run_in_order_at_their_times_and_late_ones_run_when_back(service) -> None:
    sequence = await service.define(
        {"after": "PT1H", "action": "task", "title": "Call", "due": "PT4H"},
        {
            "after": "P1D",
            "action": "email",
            "subject": "About {{ title }}",
            "body": "Dear {{ contact_name }}, {{ owner }} here about {{ value }}.",
        },
        {"after": "P2D", "action": "next_action", "due": "P3D", "note": "Chase the PO"},
    )
    deal = await service.deal()
    await service.move(deal, Stage.PROPOSAL)
    enrolled = service.clock()

    service.clock.advance(hours=1)
    await service.tick()
    service.clock.advance(days=1)
    await service.tick()
    # The service is down for five days: the third step, due after two, runs when back.
    service.clock.advance(days=5)
    await service.tick()

    history = await service.enrollment_of(deal, sequence["id"])
    assert history["state"] == "completed"
    assert [s["state"] for s in history["steps"]] == ["done", "done", "done"]
    due = [datetime.fromisoformat(s["due_at"]) for s in history["steps"]]
    ran = [datetime.fromisoformat(s["executed_at"]) for s in history["steps"]]
    first = enrolled + timedelta(hours=1)
    assert due == [first, first + timedelta(days=1), first + timedelta(days=3)]
    assert ran == [first, first + timedelta(days=1), first + timedelta(days=6)]
    envelopes = [e for e in await service.envelopes_of(deal) if e["type"] != "sequence.enrolled"]
    kinds = [e["type"] for e in envelopes]
    assert kinds.index("task.created") < kinds.index("email.requested")
    email = next(e["data"] for e in envelopes if e["type"] == "email.requested")
    assert (email["subject_line"], email["to"], email["sender"]) == (
        "About Fleet renewal",
        "jo@acme.example",
        "alice",
    )
    assert email["body"] == "Dear Jo Buyer, alice here about 50000.00 USD."
    executed = [e["data"] for e in envelopes if e["type"] == "sequence.step_executed"]
    assert [e["step_no"] for e in executed] == [1, 2, 3]
    assert executed[2]["next_action"]["note"] == "Chase the PO"
    sequences = [e["sequence"] for e in await service.envelopes_of(deal)]
    assert sequences == list(range(1, len(sequences) + 1))


async def test_closing_the_deal_cancels_its_enrollments(service) -> None:
    sequence = await service.define()
    deal = await service.deal()
    await service.move(deal, Stage.PROPOSAL)
    await service.lose(deal)

    enrollment = await service.enrollment_of(deal, sequence["id"])
    assert enrollment["state"] == "cancelled"
    assert "closed_lost" in enrollment["end_reason"]
    assert enrollment["steps"][0]["state"] == "skipped"
    service.clock.advance(days=3)
    await service.tick()
    assert await service.tasks_of(deal) == []
    assert "sequence.cancelled" in await service.types_of(deal)


async def test_a_purged_deal_has_every_live_enrollment_cancelled_once(service) -> None:
    # Neither sequence exits when the deal closes; the purge cancels them all the same.
    running = await service.define(exit_conditions=[])
    held = await service.define(exit_conditions=[])
    deal = await service.deal()
    await service.move(deal, Stage.PROPOSAL)
    paused = await service.enrollment_of(deal, held["id"])
    assert (await service.call("POST", f"/enrollments/{paused['id']}/pause")).status_code == 200
    await service.lose(deal)
    assert (await service.enrollment_of(deal, running["id"]))["state"] == "active"

    purged = OpportunityPurged(
        opportunity_id=uuid.UUID(deal),
        run_id=uuid.uuid4(),
        stage=Stage.CLOSED_LOST,
        closed_at=service.clock(),
        purged_at=service.clock(),
    )
    await service.consume(purged)
    for sequence in (running, held):
        enrollment = await service.enrollment_of(deal, sequence["id"])
        assert enrollment["state"] == "cancelled"
        assert enrollment["end_reason"] == "the deal was purged (it was closed_lost)"
    cancelled = [
        e["data"] for e in await service.envelopes_of(deal) if e["type"] == "sequence.cancelled"
    ]
    assert sorted(c["enrollment_id"] for c in cancelled) == sorted(
        [paused["id"], (await service.enrollment_of(deal, running["id"]))["id"]]
    )
    assert {c["cancelled_by"] for c in cancelled} == {"system:sequence"}

    # The purge agent may answer twice; a re-sent stage change must not enroll it again.
    await service.consume(purged)
    await service.move(deal, Stage.PROPOSAL, sequence=2)
    service.clock.advance(days=3)
    await service.tick()
    assert await service.tasks_of(deal) == []
    assert [e["state"] for e in await service.enrollments(deal)] == ["cancelled", "cancelled"]
    assert (await service.types_of(deal)).count("sequence.cancelled") == 2
    refused = await service.call(
        "POST", f"/opportunities/{deal}/enrollments", {"sequence_id": running["id"]}, **MANAGER
    )
    assert refused.status_code == 409, refused.text


async def test_leaving_the_trigger_stage_cancels_unless_the_sequence_says_otherwise(
    service,
) -> None:
    leaves = await service.define()
    stays = await service.define(exit_conditions=["deal_closed"])
    deal = await service.deal()
    await service.move(deal, Stage.PROPOSAL)
    await service.move(deal, Stage.NEGOTIATION, from_stage=Stage.PROPOSAL)
    assert (await service.enrollment_of(deal, leaves["id"]))["state"] == "cancelled"
    assert (await service.enrollment_of(deal, stays["id"]))["state"] == "active"


async def test_a_late_stage_change_neither_moves_the_deal_back_nor_enrolls(service) -> None:
    sequence = await service.define()
    deal = await service.deal()  # sequence 1
    await service.move(deal, Stage.NEGOTIATION, sequence=3)
    await service.move(deal, Stage.PROPOSAL, sequence=2)  # older than the one applied
    assert [e for e in await service.enrollments(deal) if e["sequence_id"] == sequence["id"]] == []


async def test_pause_holds_the_next_step_and_resume_goes_on_where_it_stopped(service) -> None:
    sequence = await service.define(
        {"after": "P1D", "action": "task", "title": "First"},
        {"after": "P1D", "action": "task", "title": "Second"},
    )
    deal = await service.deal()
    await service.move(deal, Stage.PROPOSAL)
    enrollment = await service.enrollment_of(deal, sequence["id"])

    service.clock.advance(hours=6)
    paused = await service.call("POST", f"/enrollments/{enrollment['id']}/pause")
    assert paused.status_code == 200, paused.text
    assert (paused.json()["state"], paused.json()["allowed_actions"]) == (
        "paused",
        ["resume", "cancel"],
    )
    service.clock.advance(days=10)
    await service.tick()
    assert await service.tasks_of(deal) == []

    resumed = await service.call("POST", f"/enrollments/{enrollment['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    service.clock.advance(hours=17)
    await service.tick()
    assert await service.tasks_of(deal) == []
    service.clock.advance(hours=1)
    await service.tick()
    assert [t["title"] for t in await service.tasks_of(deal)] == ["First"]
    types = await service.types_of(deal)
    assert types.index("sequence.paused") < types.index("sequence.resumed")


async def test_an_update_is_taken_by_new_enrollments_while_running_ones_keep_theirs(
    service,
) -> None:
    sequence = await service.define()
    first = await service.deal()
    await service.move(first, Stage.PROPOSAL)
    updated = await service.call(
        "PUT",
        f"/sequences/{sequence['id']}",
        {
            "name": "Faster follow-up",
            "trigger": {"event": "opportunity.stage_changed", "stage": "proposal"},
            "steps": [{"after": "PT1H", "action": "task", "title": "Call within the hour"}],
        },
        headers={"If-Match": '"1"'},
        **MANAGER,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    second = await service.deal()
    await service.move(second, Stage.PROPOSAL)

    service.clock.advance(days=2)
    await service.tick()
    assert [t["title"] for t in await service.tasks_of(first)] == ["Call back"]
    assert [t["title"] for t in await service.tasks_of(second)] == ["Call within the hour"]
    assert (await service.enrollment_of(first, sequence["id"]))["sequence_version"] == 1

    retired = await service.call("POST", f"/sequences/{sequence['id']}/retire", **MANAGER)
    assert retired.json()["retired"] is True
    third = await service.deal()
    await service.move(third, Stage.PROPOSAL)
    assert await service.enrollments(third) == []


async def test_enrolling_by_hand_and_cancelling(service) -> None:
    sequence = await service.define(trigger={"event": "opportunity.created", "lead_origin": "web"})
    deal = await service.deal()
    response = await service.call(
        "POST", f"/opportunities/{deal}/enrollments", {"sequence_id": sequence["id"]}
    )
    assert response.status_code == 201, response.text
    enrollment = response.json()
    assert (enrollment["enrolled_by"], enrollment["state"]) == ("alice", "active")
    again = await service.call(
        "POST", f"/opportunities/{deal}/enrollments", {"sequence_id": sequence["id"]}
    )
    assert again.status_code == 409
    operator = {"user": "otto", "roles": ("operator",), "teams": ()}
    cancelled = await service.call("POST", f"/enrollments/{enrollment['id']}/cancel", **operator)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"


async def test_a_batch_of_events_enrolls_and_exits_as_the_same_events_one_by_one(
    service, caplog
) -> None:
    """A consumer's batch locks its deals and their live enrollments ahead, in two
    statements: a deal's later events in the batch must see the enrollments its earlier
    ones started or cancelled, and those held from before the batch. A deal new to the
    batch (added by it) has no enrollment to read before its events start some."""
    leaves = await service.define()
    stays = await service.define(exit_conditions=["deal_closed"])
    started, moved_on, closed = [await service.deal() for _ in range(3)]
    await service.move(closed, Stage.PROPOSAL)  # enrolled before the batch
    created = service.created()
    new = str(created.opportunity_id)

    batch = [
        service.moved(started, Stage.PROPOSAL),
        created,
        service.moved(moved_on, Stage.PROPOSAL),
        service.moved(new, Stage.PROPOSAL),
        service.moved(moved_on, Stage.NEGOTIATION, Stage.PROPOSAL),
        service.moved(new, Stage.NEGOTIATION, Stage.PROPOSAL),
        service.lost(closed),
    ]
    numbered = [
        (event, service.sequences[event.subject] + n, uuid.uuid4())
        for n, event in enumerate(batch, start=1)
    ]
    await service.consume_batch(*numbered)
    states = {
        deal: {e["sequence_id"]: e["state"] for e in await service.enrollments(deal)}
        for deal in (started, moved_on, closed, new)
    }
    assert states == {
        started: {leaves["id"]: "active", stays["id"]: "active"},
        moved_on: {leaves["id"]: "cancelled", stays["id"]: "active"},
        closed: {leaves["id"]: "cancelled", stays["id"]: "cancelled"},
        new: {leaves["id"]: "cancelled", stays["id"]: "active"},
    }
    assert "applying one by one" not in caplog.text  # the batch applied whole
