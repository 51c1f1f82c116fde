"""Opportunities, owners, sales history, notes, assignment history; outbox and inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from alembic import op

from dealflow_common.messaging.tables import create_messaging_tables, drop_messaging_tables
from dealflow_opportunity.adapters.tables import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The tables are created from the same definitions the code queries, as they stood at
# this revision; later revisions change them with explicit operations.


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind)
    create_messaging_tables(bind)


def downgrade() -> None:
    bind = op.get_bind()
    drop_messaging_tables(bind)
    metadata.drop_all(bind)
