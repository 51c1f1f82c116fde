"""Custom field definitions: rows to definitions and back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.direct import DirectStatement
from dealflow_opportunity.adapters.tables import custom_field_definitions as table
from dealflow_opportunity.domain.custom_fields import (
    CustomFieldDefinition,
    CustomFieldNotFound,
    FieldType,
)

# Read on every deal created (its custom fields are checked against them): run directly.
_ALL = DirectStatement(select(table).order_by(table.c.position, table.c.key))


class CustomFieldDefinitions:
    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def all(self) -> dict[str, CustomFieldDefinition]:
        """Every definition, retired ones included, in the order the deal shows them."""
        rows = await _ALL.all(self._connection, {})
        return {row.key: _to_definition(row) for row in rows}

    async def find(self, key: str) -> CustomFieldDefinition | None:
        row = (await self._connection.execute(select(table).where(table.c.key == key))).first()
        return _to_definition(row) if row is not None else None

    async def get(self, key: str) -> CustomFieldDefinition:
        definition = await self.find(key)
        if definition is None:
            raise CustomFieldNotFound(key)
        return definition

    async def next_position(self) -> int:
        highest = (await self._connection.execute(select(func.max(table.c.position)))).scalar()
        return 0 if highest is None else int(highest) + 1

    async def add(self, definition: CustomFieldDefinition) -> None:
        await self._connection.execute(insert(table), _to_row(definition))

    async def save(self, definition: CustomFieldDefinition) -> None:
        row = _to_row(definition)
        del row["key"]
        await self._connection.execute(
            table.update().where(table.c.key == definition.key).values(**row)
        )


def _to_row(d: CustomFieldDefinition) -> dict[str, Any]:
    return {
        "key": d.key,
        "label": d.label,
        "type": d.type.value,
        "required": d.required,
        "choices": list(d.choices),
        "tab": d.tab,
        "position": d.position,
        "retired": d.retired,
        "created_by": d.created_by,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
    }


def _to_definition(row: Row[Any]) -> CustomFieldDefinition:
    return CustomFieldDefinition(
        key=row.key,
        label=row.label,
        type=FieldType(row.type),
        required=row.required,
        choices=tuple(row.choices),
        tab=row.tab,
        position=row.position,
        retired=row.retired,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
