"""Orders and their lines; outbox and inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from alembic import op

from dealflow_common.messaging.tables import create_messaging_tables, drop_messaging_tables
from dealflow_order.adapters.tables import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind)
    create_messaging_tables(bind)


def downgrade() -> None:
    bind = op.get_bind()
    drop_messaging_tables(bind)
    metadata.drop_all(bind)
