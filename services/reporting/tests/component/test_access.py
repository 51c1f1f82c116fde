"""Who sees which deal in the figures: the SQL mirror of `can_view_deal` agrees with it."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from dealflow_common.auth import Principal, Role
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
]
DEALS = [
    # (owners, team, created_by)
    (("ann",), "emea", "ann"),
    (("ann", "bob"), None, "ann"),
    ((), "apac", "mia"),
    (("carl",), None, "bob"),
    (("carl",), "emea", "carl"),
    ((), None, "zed"),
]


async def test_the_sql_rule_agrees_with_can_view_deal_on_every_case(service: Reporting) -> None:
    ids = []
    for owners, team, created_by in DEALS:
        ids.append(await service.deal(owners=owners, team_id=team, created_by=created_by))
    async with service.engine.connect() as connection:
        for principal in PRINCIPALS:
            condition = visible_deals(principal)
            query = select(deals.c.opportunity_id).where(deals.c.opportunity_id.in_(ids))
            if condition is not None:
                query = query.where(condition)
            seen = {row[0] for row in await connection.execute(query)}
            expected = {
                deal_id
                for deal_id, (owners, team, created_by) in zip(ids, DEALS, strict=True)
                if can_view_deal(principal, owners=owners, team_id=team, created_by=created_by)
            }
            assert seen == expected, principal


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

    ids = [
        await service.deal(owners=owners, team_id=team, created_by=created_by)
        for owners, team, created_by in DEALS
    ]
    async with service.engine.connect() as connection:
        for principal in PRINCIPALS:
            parts = []
            for part in _visibility_parts(principal):
                query = select(deals.c.opportunity_id).where(
                    deals.c.opportunity_id.in_(ids),
                    *_conditions(principal, DealFilter(), personal=part),
                )
                parts.append({row[0] for row in await connection.execute(query)})
            whole = {
                deal_id
                for deal_id, (owners, team, created_by) in zip(ids, DEALS, strict=True)
                if can_view_deal(principal, owners=owners, team_id=team, created_by=created_by)
            }
            assert set().union(*parts) == whole, principal
            assert sum(len(p) for p in parts) == len(whole), principal  # no deal twice
