"""Known opportunities keep whom the deal is shared with (opportunity.shared/.unshared).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Rows written before stay NULL: shared with no one, until the deal's next share event
or `opportunity.updated` (which carries its shares) arrives.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "known_opportunities",
        sa.Column(
            "shares",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("known_opportunities") as batch:
        batch.drop_column("shares")
