"""Defining custom fields: admins write, everyone who reads deals reads the definitions.

Definitions are configuration of the deal form, not facts about a deal: changing one
publishes no event. What a deal's values are travels in its own events
(`OpportunityState.custom_fields`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dealflow_common.auth import Principal, Role
from dealflow_common.errors import NotPermitted
from dealflow_opportunity.application.unit_of_work import OpportunityUnitOfWork
from dealflow_opportunity.domain.custom_fields import (
    CustomFieldDefinition,
    CustomFieldExists,
    FieldType,
)


def _require_admin(principal: Principal) -> None:
    if not principal.has_any(Role.ADMIN):
        raise NotPermitted("only admins define custom fields")


async def define_field(
    uow: OpportunityUnitOfWork,
    principal: Principal,
    *,
    key: str,
    label: str,
    type: FieldType,
    required: bool,
    choices: Iterable[str],
    tab: str | None,
) -> CustomFieldDefinition:
    _require_admin(principal)
    async with uow:
        if await uow.custom_fields.find(key) is not None:
            raise CustomFieldExists(key)
        definition = CustomFieldDefinition.define(
            key=key,
            label=label,
            type=type,
            required=required,
            choices=choices,
            tab=tab,
            position=await uow.custom_fields.next_position(),
            by=principal.user_id,
            now=uow.clock(),
        )
        await uow.custom_fields.add(definition)
        await uow.commit()
    return definition


async def change_field(
    uow: OpportunityUnitOfWork, principal: Principal, key: str, changes: dict[str, Any]
) -> CustomFieldDefinition:
    """Change the label, tab, choices, whether it is required, or retire it (or bring it
    back); the key and the type stay as defined."""
    _require_admin(principal)
    async with uow:
        definition = (await uow.custom_fields.get(key)).changed(uow.clock(), **changes)
        await uow.custom_fields.save(definition)
        await uow.commit()
    return definition
