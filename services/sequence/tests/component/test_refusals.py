"""Bad input is a problem+json naming the field, and writes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from dealflow_common.contracts.opportunity import Stage

PROBLEM = "application/problem+json"
MANAGER = {"user": "mia", "roles": ("manager",), "teams": ("emea",)}
PROPOSAL = {"event": "opportunity.stage_changed", "stage": "proposal"}


def sequence(trigger: dict[str, Any] = PROPOSAL, *steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "Follow-up",
        "trigger": trigger,
        "steps": list(steps) or [{"after": "P2D", "action": "task", "title": "Call"}],
    }


def task(**step: Any) -> dict[str, Any]:
    return {"after": "P1D", "action": "task", "title": "Call", **step}


def email(body: str) -> dict[str, Any]:
    return {"after": "P1D", "action": "email", "subject": "Hello", "body": body}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (
            sequence({"event": "opportunity.teleported", "stage": "proposal"}),
            "trigger.event",
            "unknown trigger event",
        ),
        (sequence({"event": "opportunity.stage_changed"}), "trigger.stage", "required"),
        (sequence(PROPOSAL, task(after="-P2D")), "steps[0].after", "negative"),
        (sequence(PROPOSAL, task(), task(after="two days")), "steps[1].after", "ISO 8601"),
        (sequence(PROPOSAL, task(after="P1M")), "steps[0].after", "months"),
        (
            sequence(PROPOSAL, {"after": "P1D", "action": "carrier_pigeon"}),
            "steps[0].action",
            "unknown action",
        ),
        (sequence(PROPOSAL, email("Dear {{ budget_holder }}")), "steps[0].body", "budget_holder"),
        (
            sequence(PROPOSAL, email("{{ title.__class__.__mro__[1].__subclasses__() }}")),
            "steps[0].body",
            "not allowed",
        ),
        (sequence(PROPOSAL, email("{{ title")), "steps[0].body", "does not parse"),
        (sequence(PROPOSAL, task(due="soon")), "steps[0].due", "ISO 8601"),
        ({**sequence(), "exit_conditions": ["full_moon"]}, "exit_conditions[0]", "unknown value"),
        ({**sequence(), "steps": []}, "steps", ""),
        ({**sequence(), "colour": "red"}, "colour", "unknown field"),
    ],
)
async def test_a_bad_definition_is_refused_naming_the_field_and_nothing_is_written(
    service, body: dict[str, Any], field: str, words: str
) -> None:
    before = await service.written()
    response = await service.call("POST", "/sequences", body, **MANAGER)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert field in [e["field"] for e in problem["errors"]], problem
    assert words in problem["detail"], problem
    assert await service.written() == before


async def test_a_bad_update_changes_nothing(service) -> None:
    created = await service.call("POST", "/sequences", sequence(), **MANAGER)
    before = await service.written()
    response = await service.call(
        "PUT",
        f"/sequences/{created.json()['id']}",
        sequence(PROPOSAL, task(after="-PT1H")),
        **MANAGER,
    )
    assert response.status_code == 422
    assert await service.written() == before
    again = await service.call("GET", f"/sequences/{created.json()['id']}")
    assert again.json()["version"] == 1


async def test_reps_do_not_define_sequences(service) -> None:
    before = await service.written()
    assert (await service.call("POST", "/sequences", sequence())).status_code == 403
    assert await service.written() == before


async def test_pausing_a_completed_enrollment_is_a_409_listing_what_is_allowed(service) -> None:
    created = (await service.call("POST", "/sequences", sequence(), **MANAGER)).json()
    deal = await service.deal()
    await service.move(deal, Stage.PROPOSAL)
    service.clock.advance(days=2)
    await service.tick()
    enrollment = await service.enrollment_of(deal, created["id"])
    assert enrollment["state"] == "completed"

    before = await service.written()
    for action in ("pause", "resume", "cancel"):
        response = await service.call("POST", f"/enrollments/{enrollment['id']}/{action}")
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == PROBLEM
        assert (response.json()["state"], response.json()["allowed"]) == ("completed", [])
    assert await service.written() == before


async def test_completing_a_done_task_is_a_409_and_writes_nothing(service) -> None:
    deal = await service.deal()
    created = await service.call(
        "POST",
        "/tasks",
        {"opportunity_id": deal, "title": "Send the deck", "due_at": "2030-01-01T09:00:00Z"},
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    assert (await service.call("POST", f"/tasks/{task_id}/complete")).status_code == 200
    before = await service.written()
    again = await service.call("POST", f"/tasks/{task_id}/complete")
    assert again.status_code == 409
    assert again.json()["state"] == "done"
    assert await service.written() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x", "due_at": "2030-01-01T09:00:00"}, "due_at"),
        ({"title": "", "due_at": "2030-01-01T09:00:00Z"}, "title"),
        ({"title": "x", "due_at": "2030-01-01T09:00:00Z", "kind": "party"}, "kind"),
    ],
)
async def test_a_bad_manual_task_is_refused(service, body: dict[str, Any], field: str) -> None:
    deal = await service.deal()
    before = await service.written()
    response = await service.call("POST", "/tasks", {"opportunity_id": deal, **body})
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]
    assert await service.written() == before


async def test_enrolling_an_unknown_deal_or_in_an_unknown_sequence_is_a_404(service) -> None:
    created = (await service.call("POST", "/sequences", sequence(), **MANAGER)).json()
    deal = await service.deal()
    before = await service.written()
    unknown_deal = await service.call(
        "POST", f"/opportunities/{uuid.uuid4()}/enrollments", {"sequence_id": created["id"]}
    )
    unknown_sequence = await service.call(
        "POST", f"/opportunities/{deal}/enrollments", {"sequence_id": str(uuid.uuid4())}
    )
    assert (unknown_deal.status_code, unknown_sequence.status_code) == (404, 404)
    assert await service.written() == before
