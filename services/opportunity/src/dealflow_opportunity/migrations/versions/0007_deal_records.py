"""A deal's competitors, decision issues and contacts with roles.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from dealflow_common.db import JsonDocument

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_COLUMNS = ("competitors", "decision_issues", "contacts")


def upgrade() -> None:
    with op.batch_alter_table("opportunities") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, JsonDocument, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("opportunities") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
