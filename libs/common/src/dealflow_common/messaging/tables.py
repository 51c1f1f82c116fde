"""The tables every service keeps for reliable messaging, in its own schema or file.

- `outbox`: events written in the same transaction as the state change that caused
  them; the relay publishes unsent rows and stamps `sent_at`.
- `event_sequence`: the last `sequence` given to each subject (opportunity) by this
  service; the upsert that advances it also serialises writers of one subject, so
  sequence order is commit order.
- `inbox`: the envelope ids each consumer group has applied, written in the same
  transaction as the effect.

Their migrations are written out once, in `schema_v1` (called by every service's first
revision); a test compares every service's migrated schema with these definitions.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.engine import Connection

from dealflow_common.db import BigId, UtcDateTime

messaging_metadata = MetaData()

outbox = Table(
    "outbox",
    messaging_metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", Uuid, nullable=False, unique=True),
    Column("topic", String(200), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("correlation_id", String(100), nullable=False),
    Column("envelope", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    # The relay reads only unsent rows; a partial index keeps that read small however
    # much published history is retained.
    Index(
        "ix_outbox_unsent",
        "id",
        postgresql_where=text("sent_at IS NULL"),
        sqlite_where=text("sent_at IS NULL"),
    ),
    Index("ix_outbox_sent_at", "sent_at"),
)

event_sequence = Table(
    "event_sequence",
    messaging_metadata,
    Column("subject", String(100), primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
)

inbox = Table(
    "inbox",
    messaging_metadata,
    Column("consumer_group", String(200), nullable=False),
    Column("event_id", Uuid, nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("source", String(200), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("applied_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("consumer_group", "event_id"),
    Index("ix_inbox_applied_at", "applied_at"),
)


def create_messaging_tables(connection: Connection) -> None:
    """For tests that need the messaging tables without a service's migrations."""
    messaging_metadata.create_all(connection)
