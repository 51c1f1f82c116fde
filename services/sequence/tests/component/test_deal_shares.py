"""The deal's shares, as opportunity.shared/.unshared tell them: a user the deal is
shared with sees its tasks and enrollments, works on them only with an `edit` share,
and a page of tasks holds the visible ones however many hidden ones come first."""

from __future__ import annotations

import uuid
from datetime import timedelta

from dealflow_common.contracts.opportunity import OpportunityShared, OpportunityUnshared, Share

READER = {"user": "rita", "roles": ("rep",), "teams": ()}
EDITOR = {"user": "eddie", "roles": ("rep",), "teams": ()}


def shares(*held: tuple[str, str]) -> list[Share]:
    return [Share(kind="user", id=user, grant=grant) for user, grant in held]  # type: ignore[arg-type]


async def test_shares_reach_the_deal_and_a_read_share_only_reads(service) -> None:
    deal = await service.deal(owners=("alice",), team_id=None)
    task = await service.call(
        "POST",
        "/tasks",
        {"opportunity_id": deal, "title": "Call", "due_at": "2030-01-01T09:00:00Z"},
    )
    task_id = task.json()["id"]
    assert (await service.call("GET", f"/tasks/{task_id}", **READER)).status_code == 404
    now = service.clock()
    both = shares(("rita", "read"), ("eddie", "edit"))
    await service.consume(
        OpportunityShared(
            opportunity_id=uuid.UUID(deal),
            share=both[1],
            shares=both,
            shared_by="alice",
            shared_at=now,
            version=2,
        )
    )

    assert (await service.call("GET", f"/tasks/{task_id}", **READER)).status_code == 200
    assert (await service.call("POST", f"/tasks/{task_id}/complete", **READER)).status_code == 403
    assert (
        await service.call("POST", f"/tasks/{task_id}/notes", {"text": "n"}, **EDITOR)
    ).status_code == 201

    left = shares(("eddie", "edit"))
    await service.consume(
        OpportunityUnshared(
            opportunity_id=uuid.UUID(deal),
            share=both[0],
            shares=left,
            unshared_by="alice",
            unshared_at=now,
            version=3,
        )
    )
    assert (await service.call("GET", f"/tasks/{task_id}", **READER)).status_code == 404


async def test_a_page_of_tasks_holds_the_visible_ones_after_hidden_ones(service) -> None:
    assignee = f"pat-{uuid.uuid4().hex[:6]}"
    hidden = await service.deal(owners=("zoe",), team_id=None)
    seen = await service.deal(owners=(assignee,), team_id=None)
    due = service.clock() + timedelta(days=1)
    for deal, count in ((hidden, 3), (seen, 2)):
        for i in range(count):
            body = {
                "opportunity_id": deal,
                "title": f"T{i}",
                "assignee": assignee,
                "due_at": (due + timedelta(hours=i + (0 if deal == hidden else 10))).isoformat(),
            }
            made = await service.call(
                "POST", "/tasks", body, user="zoe" if deal == hidden else assignee
            )
            assert made.status_code == 201, made.text

    page = await service.call("GET", f"/tasks?assignee={assignee}&limit=2", user=assignee, teams=())

    assert [t["opportunity_id"] for t in page.json()] == [seen, seen]
