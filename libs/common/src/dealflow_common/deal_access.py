"""Who may see a deal, the one rule every service applies to it.

Admins and operators see every deal. Anyone else sees the deals they own, created, or
that belong to one of their teams (a team's queue included). The opportunity service
applies it to its rows; the quote service to its projection of opportunities.
"""

from __future__ import annotations

from collections.abc import Collection

from dealflow_common.auth import Principal, Role

WRITERS = (Role.REP, Role.MANAGER, Role.ADMIN)


def can_view_deal(
    principal: Principal, *, owners: Collection[str], team_id: str | None, created_by: str
) -> bool:
    if principal.sees_everything:
        return True
    return (
        principal.user_id in owners
        or principal.user_id == created_by
        or (team_id is not None and team_id in principal.teams)
    )
