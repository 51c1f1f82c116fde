"""Who may see and who may work on a deal: the one rule every service applies to it.

A deal is seen by
- admins, and operators (operations need to read everything; they change nothing);
- its owners (co-owners included) and the user who created it;
- every member of its team, reps and managers alike (the team's queue included): the
  managers of a team see and steer their team's deals;
- the users and the members of the teams it is shared with, whatever the grant.

A deal is worked on (changed, quoted, its tasks and enrollments handled) by the reps
and managers among those who see it, except those who see it only through a `read`
share; and by admins. Operators never change a deal. What needs a manager besides
(handing a deal to other owners or teams, approving a discount) is each service's rule
on top of this one.

Every service calls these with the access keys its projection of the deal carries
(owners, team, creator, shares), so that opportunity, quote, order, sequence and purge
answer alike. A service answers 404 for a deal its caller may not see, never 403: the
answer must not tell whether the deal exists.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from dealflow_common.auth import Principal, Role
from dealflow_common.contracts.opportunity import Share, ShareGrant

WRITERS = (Role.REP, Role.MANAGER, Role.ADMIN)


def holds_share(principal: Principal, share: Share) -> bool:
    """Whether `share` names the caller, or one of the caller's teams."""
    if share.kind == "user":
        return share.id == principal.user_id
    return share.id in principal.teams


def can_view_deal(
    principal: Principal,
    *,
    owners: Collection[str],
    team_id: str | None,
    created_by: str,
    shares: Collection[Share] = (),
) -> bool:
    if principal.sees_everything:
        return True
    return (
        principal.user_id in owners
        or principal.user_id == created_by
        or (team_id is not None and team_id in principal.teams)
        or any(holds_share(principal, share) for share in shares)
    )


def can_edit_deal(
    principal: Principal,
    *,
    owners: Collection[str],
    team_id: str | None,
    created_by: str,
    shares: Collection[Share] = (),
) -> bool:
    if principal.has_any(Role.ADMIN):
        return True
    if not principal.has_any(Role.REP, Role.MANAGER):
        return False  # operators read, never change
    return (
        principal.user_id in owners
        or principal.user_id == created_by
        or (team_id is not None and team_id in principal.teams)
        or any(share.grant == ShareGrant.EDIT and holds_share(principal, share) for share in shares)
    )


def shares_from_document(document: Iterable[Mapping[str, Any]] | None) -> list[Share]:
    """The shares a projection keeps as a JSON list (NULL: a row from before sharing)."""
    return [Share.model_validate(item) for item in document or ()]


def shares_to_document(shares: Iterable[Share]) -> list[dict[str, Any]]:
    return [share.model_dump(mode="json") for share in shares]
