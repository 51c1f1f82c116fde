"""Revision 1 of the `request_keys` table (`dealflow_common.idempotency`), written out.

The revision of each service whose creates take an Idempotency-Key calls `create()`; a
later change is a new module called by a new revision, never an edit of this one.
"""

import sqlalchemy as sa
from alembic import op

import dealflow_common.db


def create() -> None:
    op.create_table(
        "request_keys",
        sa.Column("caller", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", dealflow_common.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("caller", "key", name="pk_request_keys"),
    )
    op.create_index("ix_request_keys_created_at", "request_keys", ["created_at"])


def drop() -> None:
    op.drop_index("ix_request_keys_created_at", table_name="request_keys")
    op.drop_table("request_keys")
