"""Who sees which deal in the figures: the SQL mirror of `can_view_deal` agrees with it."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from dealflow_common.auth import Principal, Role
from dealflow_common.contracts.opportunity import Share, ShareGrant
from dealflow_common.deal_access import can_view_deal
from dealflow_reporting.adapters.access import visible_deals
from dealflow_reporting.adapters.tables import deals

from .conftest import Reporting

PRINCIPALS = [
    Principal("root", frozenset({Role.ADMIN}), frozenset()),
    Principal("olga", frozenset({Role.OPERATOR}), frozenset()),
    Principal("mia", frozenset({Role.MANAGER}), frozenset({"emea"})),
    Principal("max", frozenset({Role.MANAGER, Role.REP}), frozenset({"emea", "apac"})),
    Principal("ann", frozenset({Role.REP}), frozenset()),
    Principal("bob", frozenset({Role.REP}), frozenset({"apac"})),
    Principal("eve", frozenset({Role.REP}), frozenset({"nowhere"})),
    Principal("dan", frozenset({Role.REP}), frozenset()),
]


def user(who: str, grant: ShareGrant = ShareGrant.READ) -> Share:
    return Share(kind="user", id=who, grant=grant)


def team(which: str, grant: ShareGrant = ShareGrant.READ) -> Share:
    return Share(kind="team", id=which, grant=grant)


DEALS: list[tuple[tuple[str, ...], str | None, str, tuple[Share, ...]]] = [
    # (owners, team, created_by, shares)
    (("ann",), "emea", "ann", ()),
    (("ann", "bob"), None, "ann", ()),
    ((), "apac", "mia", ()),
    (("carl",), None, "bob", ()),
    (("carl",), "emea", "carl", ()),
    ((), None, "zed", ()),
    # Shared with a user, to read; with a user, to edit (the grant does not matter).
    (("carl",), None, "carl", (user("dan"),)),
    (("carl",), "apac", "carl", (user("eve", ShareGrant.EDIT),)),
    # Shared with a team: its members see it, its managers too (mia manages emea).
    (("zed",), "apac", "zed", (team("emea"),)),
    (("zed",), None, "zed", (team("nowhere", ShareGrant.EDIT), user("dan", ShareGrant.EDIT))),
    # Shared with whom owns it, created it, or has it in their team: seen once.
    (("ann",), None, "ann", (user("ann"),)),
    (("carl",), None, "bob", (user("bob", ShareGrant.EDIT),)),
    (("carl",), "apac", "carl", (team("apac"), user("bob"), user("max"))),
    (("ann",), "emea", "zed", (team("emea"), user("ann"), team("apac"))),
    # Shared with nobody of these.
    (("carl",), None, "carl", (user("nobody"), team("elsewhere"))),
]


def allowed(principal: Principal, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    return {
        deal_id
        for deal_id, (owners, team_id, created_by, shares) in zip(ids, DEALS, strict=True)
        if can_view_deal(
            principal, owners=owners, team_id=team_id, created_by=created_by, shares=shares
        )
    }


async def make_deals(service: Reporting) -> list[uuid.UUID]:
    return [
        await service.deal(owners=owners, team_id=team_id, created_by=created_by, shares=shares)
        for owners, team_id, created_by, shares in DEALS
    ]


def test_the_cases_include_deals_seen_only_through_a_share() -> None:
    """Else the agreement below would hold for a rule that ignores shares."""
    ids = [uuid.uuid4() for _ in DEALS]
    for principal in PRINCIPALS:
        without = {
            deal_id
            for deal_id, (owners, team_id, created_by, _) in zip(ids, DEALS, strict=True)
            if can_view_deal(principal, owners=owners, team_id=team_id, created_by=created_by)
        }
        if principal.user_id in {"dan", "eve", "mia", "bob"}:
            assert allowed(principal, ids) > without, principal.user_id


async def test_the_sql_rule_agrees_with_can_view_deal_on_every_case(service: Reporting) -> None:
    ids = await make_deals(service)
    async with service.engine.connect() as connection:
        for principal in PRINCIPALS:
            condition = visible_deals(principal)
            query = select(deals.c.opportunity_id).where(deals.c.opportunity_id.in_(ids))
            if condition is not None:
                query = query.where(condition)
            seen = {row[0] for row in await connection.execute(query)}
            assert seen == allowed(principal, ids), principal


async def test_a_rep_sees_only_their_deals_in_the_pipeline_a_manager_their_teams(
    service: Reporting,
) -> None:
    await service.deal("100.00", owners=("ann",), team_id=None)
    await service.deal("200.00", owners=("bob",), team_id="emea")
    await service.deal("400.00", owners=("carl",), team_id="apac")

    async def total(user: str, roles: tuple[str, ...], teams: tuple[str, ...]) -> str:
        body = await service.get("/pipeline", user=user, roles=roles, teams=teams)
        return str(body["total"]["value"]["amount"])

    assert await total("ann", ("rep",), ()) == "100.00"
    assert await total("mia", ("manager",), ("emea",)) == "200.00"
    assert await total("root", ("admin",), ()) == "700.00"
    assert await total("olga", ("operator",), ()) == "700.00"
    forecast = await service.get("/forecast?by=owner", user="ann", roles=("rep",), teams=())
    assert {line["owner"] for line in forecast["lines"]} == {"ann"}


async def test_a_deal_nobody_created_is_not_invented(service: Reporting) -> None:
    """An id no event named is in no figure (no row is made up from a query)."""
    body = await service.get(
        f"/customers/{uuid.uuid4().hex}/deals", user="root", roles=("admin",), teams=()
    )
    assert body == []


async def test_the_parts_a_view_is_read_in_are_disjoint_and_make_the_whole(
    service: Reporting,
) -> None:
    from dealflow_reporting.adapters.reports import _conditions, _visibility_parts
    from dealflow_reporting.domain.filters import DealFilter

    ids = await make_deals(service)
    async with service.engine.connect() as connection:
        for principal in PRINCIPALS:
            parts = []
            for part in _visibility_parts(principal):
                query = select(deals.c.opportunity_id).where(
                    deals.c.opportunity_id.in_(ids),
                    *_conditions(principal, DealFilter(), personal=part),
                )
                parts.append({row[0] for row in await connection.execute(query)})
            whole = allowed(principal, ids)
            assert set().union(*parts) == whole, principal
            assert sum(len(p) for p in parts) == len(whole), principal  # no deal twice


async def test_a_shared_deal_counts_for_its_holders_once_and_leaves_with_the_share(
    service: Reporting,
) -> None:
    await service.deal("100.00", owners=("ann",), team_id="emea", customer="acme")
    to_dan, to_apac = user("dan"), team("apac", ShareGrant.EDIT)
    shared = await service.deal(
        "400.00", owners=("carl",), team_id="emea", customer="acme", shares=(to_dan,)
    )

    async def pipeline(who: str, teams: tuple[str, ...]) -> tuple[int, str]:
        body = await service.get("/pipeline", user=who, roles=("manager",), teams=teams)
        return body["total"]["deals"], str(body["total"]["value"]["amount"])

    async def history(who: str, teams: tuple[str, ...]) -> list[str]:
        body = await service.get("/customers/acme/deals", user=who, roles=("rep",), teams=teams)
        return [deal["id"] for deal in body]

    assert await pipeline("dan", ()) == (1, "400.00")
    assert await history("dan", ()) == [str(shared)]
    assert await pipeline("bob", ("apac",)) == (0, "0.00")

    # Shared with apac too: its members see it; a manager of emea and apac once.
    await service.share(shared, to_apac, to_dan, to_apac)
    assert await pipeline("bob", ("apac",)) == (1, "400.00")
    assert await pipeline("max", ("emea", "apac")) == (2, "500.00")
    by_owner = await service.get("/forecast?by=owner", user="bob", roles=("rep",), teams=("apac",))
    assert [(line["owner"], line["deals"]) for line in by_owner["lines"]] == [("carl", 1)]

    await service.unshare(shared, to_dan, to_apac)
    assert await pipeline("dan", ()) == (0, "0.00")
    assert await history("dan", ()) == []
    assert await pipeline("bob", ("apac",)) == (1, "400.00")

    await service.unshare(shared, to_apac)
    assert await pipeline("bob", ("apac",)) == (0, "0.00")
    assert await history("bob", ("apac",)) == []
    assert await pipeline("max", ("emea", "apac")) == (2, "500.00")
