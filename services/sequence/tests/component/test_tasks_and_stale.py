"""Tasks of a deal (manual ones, notes, overdue, complete) and stale-deal alerts, seen by
whoever may see the deal."""

from __future__ import annotations

from datetime import date, timedelta

from dealflow_common.contracts.opportunity import NextAction

REP_ELSEWHERE = {"user": "bob", "roles": ("rep",), "teams": ("apac",)}
MANAGER = {"user": "mia", "roles": ("manager",), "teams": ("emea",)}
MANAGER_ELSEWHERE = {"user": "max", "roles": ("manager",), "teams": ("apac",)}
OPERATOR = {"user": "otto", "roles": ("operator",), "teams": ()}


async def test_manual_tasks_with_notes_become_overdue_and_are_completed(service) -> None:
    deal = await service.deal()
    due = service.clock() + timedelta(hours=2)
    created = await service.call(
        "POST",
        "/tasks",
        {"opportunity_id": deal, "title": "Demo", "due_at": due.isoformat(), "kind": "appointment"},
    )
    assert created.status_code == 201, created.text
    task = created.json()
    assert (task["assignee"], task["kind"], task["overdue"]) == ("alice", "appointment", False)
    noted = await service.call("POST", f"/tasks/{task['id']}/notes", {"text": "Bring the CFO"})
    assert noted.status_code == 201, noted.text

    service.clock.advance(hours=3)
    (overdue,) = await service.tasks_of(deal, state="overdue")
    assert overdue["overdue"] is True
    assert [n["text"] for n in overdue["notes"]] == ["Bring the CFO"]
    done = await service.call("POST", f"/tasks/{task['id']}/complete")
    assert (done.json()["state"], done.json()["completed_by"]) == ("done", "alice")
    assert await service.tasks_of(deal, state="open") == []
    assert [t["id"] for t in await service.tasks_of(deal, state="done")] == [task["id"]]
    assert [t for t in await service.types_of(deal) if t.startswith("task.")] == [
        "task.created",
        "task.completed",
    ]


async def test_tasks_and_enrollments_are_seen_by_those_who_may_see_the_deal(service) -> None:
    deal = await service.deal(owners=("alice",), team_id="emea")
    created = await service.call(
        "POST",
        "/tasks",
        {"opportunity_id": deal, "title": "Call", "due_at": "2030-01-01T09:00:00Z"},
    )
    task_id = created.json()["id"]
    for who in (REP_ELSEWHERE, MANAGER_ELSEWHERE):
        assert (
            await service.call("GET", f"/tasks?opportunity_id={deal}", **who)
        ).status_code == 404
        assert (await service.call("GET", f"/tasks/{task_id}", **who)).status_code == 404
        listed = await service.call("GET", "/tasks?assignee=alice", **who)
        assert task_id not in [t["id"] for t in listed.json()]
        history = await service.call("GET", f"/opportunities/{deal}/enrollments", **who)
        assert history.status_code == 404
        refused = await service.call("POST", f"/tasks/{task_id}/complete", **who)
        assert refused.status_code == 404
    for who in (MANAGER, OPERATOR):
        listed = await service.call("GET", f"/tasks?opportunity_id={deal}", **who)
        assert [t["id"] for t in listed.json()] == [task_id]
    assert (await service.call("POST", f"/tasks/{task_id}/complete", **OPERATOR)).status_code == 403


async def test_a_quiet_deal_is_reported_once_until_new_activity(service) -> None:
    deal = await service.deal()
    await service.check_stale()
    service.clock.advance(days=7)
    await service.check_stale()
    await service.check_stale()
    stale = [e for e in await service.envelopes_of(deal) if e["type"] == "opportunity.stale"]
    assert [e["data"]["reason"] for e in stale] == ["inactive"]
    listed = await service.call("GET", "/stale", **MANAGER)
    assert deal in [d["opportunity_id"] for d in listed.json()]
    elsewhere = await service.call("GET", "/stale", **MANAGER_ELSEWHERE)
    assert deal not in [d["opportunity_id"] for d in elsewhere.json()]

    # New activity: a task with a note; off the list, and reported again only after
    # another quiet week once that task is past.
    service.clock.advance(hours=1)
    created = await service.call(
        "POST",
        "/tasks",
        {
            "opportunity_id": deal,
            "title": "Call",
            "due_at": (service.clock() + timedelta(days=2)).isoformat(),
        },
    )
    assert created.status_code == 201
    listed = await service.call("GET", "/stale", **MANAGER)
    assert deal not in [d["opportunity_id"] for d in listed.json()]
    service.clock.advance(days=6)
    await service.check_stale()
    service.clock.advance(days=1, minutes=1)
    await service.check_stale()
    stale = [e for e in await service.envelopes_of(deal) if e["type"] == "opportunity.stale"]
    assert len(stale) == 2


async def test_an_open_future_task_keeps_a_deal_from_being_stale(service) -> None:
    deal = await service.deal()
    await service.call(
        "POST",
        "/tasks",
        {
            "opportunity_id": deal,
            "title": "Quarterly call",
            "due_at": (service.clock() + timedelta(days=30)).isoformat(),
        },
    )
    service.clock.advance(days=8)
    await service.check_stale()
    assert "opportunity.stale" not in await service.types_of(deal)


async def test_the_next_action_following_tasks_is_not_activity_a_person_is(service) -> None:
    """The opportunity service publishes the next action its tasks give the deal; that
    echo of this service's own tasks must not keep a quiet deal off the stale list."""
    quiet, touched = await service.deal(), await service.deal()
    service.clock.advance(days=6)
    follows = {"next_action": NextAction(date=service.clock().date(), note="Call")}
    await service.update(quiet, "system:sequence", **follows)
    await service.update(touched, "alice", **follows)
    service.clock.advance(days=1, minutes=1)
    await service.check_stale()
    assert "opportunity.stale" in await service.types_of(quiet)
    assert "opportunity.stale" not in await service.types_of(touched)


async def test_a_past_expected_close_date_is_reported_once(service) -> None:
    deal = await service.deal(expected_close_date=service.clock().date() + timedelta(days=1))
    await service.check_stale()
    service.clock.advance(days=2)
    await service.check_stale()
    await service.check_stale()
    stale = [
        e["data"] for e in await service.envelopes_of(deal) if e["type"] == "opportunity.stale"
    ]
    assert [s["reason"] for s in stale] == ["close_date_past"]
    assert date.fromisoformat(stale[0]["expected_close_date"]) < service.clock().date()
