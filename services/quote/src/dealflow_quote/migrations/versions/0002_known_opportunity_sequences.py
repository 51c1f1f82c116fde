"""Known opportunities remember, per field, the sequence of the event that last set it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

So that a late or re-sent opportunity event never moves the projection back
(DESIGN.md section 2; dealflow_common/messaging/projection.py). Rows written before
stay NULL: the next event of each deal sets every field it carries, as before.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "known_opportunities",
        sa.Column(
            "applied_sequences",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
    )


def downgrade() -> None:
    # Batch mode: SQLite rebuilds the table, PostgreSQL drops the column in place.
    with op.batch_alter_table("known_opportunities") as batch:
        batch.drop_column("applied_sequences")
