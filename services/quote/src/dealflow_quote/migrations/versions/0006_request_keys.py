"""The Idempotency-Keys of quote creates (`dealflow_common.idempotency`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from dealflow_common import request_keys_schema_v1

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    request_keys_schema_v1.create()


def downgrade() -> None:
    request_keys_schema_v1.drop()
