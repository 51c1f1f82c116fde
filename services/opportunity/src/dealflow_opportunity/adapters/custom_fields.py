"""Custom field definitions: rows to definitions and back, and this process's copy of
them for the deals it opens.

Every new deal's custom fields are checked against the definitions, which change
rarely (an admin's edit) while deals open many times a second. On PostgreSQL a deal
opened in one-write mode is checked against the copy of the definitions this process
read last, instead of a read of its own: one statement and round trip less a deal. The
copy carries the fingerprint PostgreSQL computed over the rows it was read from, and
the deal's insert runs only if the table still has that fingerprint (a gate in the same
statement, `OpportunityRepository.add_at_commit`). A change by any replica therefore
refuses the next open made from the old copy; the copy is forgotten and the open runs
again from a read (`StaleCopy`), as it does when the copy leads to a refusal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, insert, literal_column, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from dealflow_common.db import is_postgres
from dealflow_common.direct import DirectStatement
from dealflow_common.one_write import is_one_write
from dealflow_opportunity.adapters.tables import custom_field_definitions as table
from dealflow_opportunity.domain.custom_fields import (
    CustomFieldDefinition,
    CustomFieldNotFound,
    FieldType,
)

FINGERPRINT: ColumnElement[str] = literal_column(
    "(SELECT md5(coalesce(string_agg(d::text, ',' ORDER BY d.key), '')) "
    "FROM custom_field_definitions AS d)"
)
"""The definitions' rows as they are now, as one value (PostgreSQL): what a copy was
read with, and what the gate of a deal opened from it compares."""

_EMPTY_FINGERPRINT = "d41d8cd98f00b204e9800998ecf8427e"  # md5 of '': no definition at all

_ORDER = (table.c.position, table.c.key)
# Read for the deals a copy cannot serve (and on SQLite for every one): run directly.
_ALL = DirectStatement(select(table).order_by(*_ORDER))
_ALL_WITH_FINGERPRINT = DirectStatement(
    select(table, FINGERPRINT.label("fingerprint")).order_by(*_ORDER)
)

Definitions = dict[str, CustomFieldDefinition]


def _nothing_to_forget() -> None:
    return None


@dataclass(frozen=True, slots=True)
class DefinitionsAsRead:
    definitions: Definitions
    fingerprint: str | None
    """The rows' fingerprint when the deal's insert is to check it: only for a copy."""
    forget: Callable[[], None] = _nothing_to_forget
    """Forgets the copy they came from, when the insert finds the table changed."""


class KeptDefinitions:
    """This process's copy of the definitions, with their fingerprint (PostgreSQL)."""

    def __init__(self) -> None:
        self._kept: tuple[Definitions, str] | None = None

    def take(self) -> tuple[Definitions, str] | None:
        return self._kept

    def keep(self, definitions: Definitions, fingerprint: str) -> None:
        self._kept = (definitions, fingerprint)

    def forget(self) -> None:
        self._kept = None


class CustomFieldDefinitions:
    def __init__(
        self,
        connection: AsyncConnection,
        kept: KeptDefinitions | None = None,
        served: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._connection = connection
        self._kept = kept
        self._served = served

    async def all(self) -> Definitions:
        """Every definition, retired ones included, in the order the deal shows them."""
        rows = await _ALL.all(self._connection, {})
        return {row.key: _to_definition(row) for row in rows}

    async def for_new_deal(self) -> DefinitionsAsRead:
        """`all()` for a deal to be opened: in one-write mode on PostgreSQL the copy this
        process kept, if any, with the fingerprint its insert must find (a refusal the
        copy leads to forgets it, `UnitOfWork.served_copy`); otherwise read, and kept."""
        kept = self._kept
        if kept is None or not is_postgres(self._connection):
            return DefinitionsAsRead(await self.all(), None)
        copy = kept.take()
        if copy is not None and self._served is not None and is_one_write(self._connection):
            self._served(kept.forget)
            return DefinitionsAsRead(*copy, forget=kept.forget)
        rows = await _ALL_WITH_FINGERPRINT.all(self._connection, {})
        definitions = {row.key: _to_definition(row) for row in rows}
        kept.keep(definitions, rows[0].fingerprint if rows else _EMPTY_FINGERPRINT)
        return DefinitionsAsRead(definitions, None)

    def _changed(self) -> None:
        """This process changed them: its next deal reads them again. (Another replica's
        change is found by the gate of the next deal opened from the copy.)"""
        if self._kept is not None:
            self._kept.forget()

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
        self._changed()

    async def save(self, definition: CustomFieldDefinition) -> None:
        row = _to_row(definition)
        del row["key"]
        await self._connection.execute(
            table.update().where(table.c.key == definition.key).values(**row)
        )
        self._changed()


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
