"""An `Idempotency-Key` on a create: a retried request gets what the first one made.

Why creates need it: a create sent as one statement that commits by itself
(`one_write`) and loses its connection on the way cannot tell whether it was stored, so
it answers 500 `outcome-unknown` (`CommitOutcomeUnknown`). A client that sent a key
sends the same request again with it: if the first was stored it gets that resource
back (`Idempotent-Replayed: true`), otherwise the create happens now. Without a key a
retry could make a second deal or quote.

How it is kept: a row of `request_keys` per (caller, key), written in the create's own
transaction, so the key exists exactly when its resource does; a refused create
(422, 409) stores no key and may be retried as it is. The same key with another request
is refused (422): the fingerprint is a hash of the request as understood, kind and body.
Keys are forgotten after `idempotency_key_retention_hours` (24 by default, as in the
payment APIs that made the header common); a retry comes within seconds or minutes.

Two requests with one key at once: the second's claim waits for the first's commit and
then finds the key taken (`RequestKeyInUse`, a `ReadChanged`): the use case runs again,
locked, and its first look finds the stored resource to answer with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import orjson
from pydantic import BaseModel
from sqlalchemy import (
    Column,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Uuid,
    bindparam,
    delete,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dealflow_common.db import UtcDateTime
from dealflow_common.errors import Conflict, RuleViolated
from dealflow_common.one_write import ReadChanged

HEADER = "Idempotency-Key"


def request_keys_table(metadata: MetaData) -> Table:
    """The table of a service whose creates take an `Idempotency-Key`."""
    return Table(
        "request_keys",
        metadata,
        # Keys are the caller's: two users may pick the same one.
        Column("caller", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("fingerprint", String(64), nullable=False),
        Column("resource_id", Uuid, nullable=False),
        Column("created_at", UtcDateTime, nullable=False, index=True),
        PrimaryKeyConstraint("caller", "key", name="pk_request_keys"),
    )


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A request's Idempotency-Key and the fingerprint of what it asked."""

    key: str
    fingerprint: str

    @classmethod
    def of(
        cls, key: str | None, kind: str, body: BaseModel, *, sent_only: bool = False
    ) -> Idempotency | None:
        """None without a key (and nothing computed). The fingerprint is of the body as
        understood (money normalised, so "100" and "100.00" are one request); with
        `sent_only`, of the fields sent, where leaving one out differs from sending its
        default (a deal's `team_id`)."""
        if key is None:
            return None
        request = body.model_dump(mode="json", exclude_unset=sent_only)
        canonical = orjson.dumps({"kind": kind, "body": request}, option=orjson.OPT_SORT_KEYS)
        return cls(key=key, fingerprint=hashlib.sha256(canonical).hexdigest())


class IdempotencyKeyReused(RuleViolated):
    def __init__(self, scope: str = "") -> None:
        where = f" {scope}" if scope else ""
        super().__init__(
            HEADER,
            f"this key was used for a different request{where}; send a new key for a new request",
        )


class RequestKeyInUse(Conflict, ReadChanged):
    """Another request with this key committed while this one ran: run again to answer
    with what it made (or, run again already, 409: retry)."""

    def __init__(self) -> None:
        super().__init__(
            "another request with this Idempotency-Key was stored meanwhile; send it again"
        )


class RequestKeys:
    """The keys of one unit of work's connection."""

    def __init__(self, connection: AsyncConnection, table: Table) -> None:
        self._connection = connection
        self._table = table

    async def earlier(self, caller: str, idempotency: Idempotency) -> UUID | None:
        """What an earlier request with this key made; None for a new key. Raises
        `IdempotencyKeyReused` when that request asked something else."""
        t = self._table
        row = (
            await self._connection.execute(
                select(t.c.fingerprint, t.c.resource_id).where(
                    t.c.caller == bindparam("b_caller"), t.c.key == bindparam("b_key")
                ),
                {"b_caller": caller, "b_key": idempotency.key},
            )
        ).first()
        if row is None:
            return None
        if row.fingerprint != idempotency.fingerprint:
            raise IdempotencyKeyReused()
        return UUID(str(row.resource_id))

    async def claim(
        self, caller: str, idempotency: Idempotency, resource_id: UUID, now: datetime
    ) -> None:
        """Store the key with the resource it makes, in the create's transaction. Raises
        `RequestKeyInUse` when another request stored it since `earlier` looked (this
        insert waited for that one's commit)."""
        insert = (
            postgresql.insert if self._connection.dialect.name == "postgresql" else sqlite.insert
        )
        result = await self._connection.execute(
            insert(self._table)
            .values(
                caller=caller,
                key=idempotency.key,
                fingerprint=idempotency.fingerprint,
                resource_id=resource_id,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["caller", "key"])
        )
        if result.rowcount == 0:
            raise RequestKeyInUse()


async def forget_old_keys(engine: AsyncEngine, table: Table, before: datetime) -> int:
    """Delete keys stored before `before`; how many were deleted."""
    async with engine.begin() as connection:
        result = await connection.execute(delete(table).where(table.c.created_at < before))
    return int(result.rowcount or 0)
