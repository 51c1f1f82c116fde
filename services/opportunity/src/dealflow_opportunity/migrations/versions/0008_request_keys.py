"""The Idempotency-Keys of deal openings (`dealflow_common.idempotency`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from dealflow_common import request_keys_schema_v1

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    request_keys_schema_v1.create()


def downgrade() -> None:
    request_keys_schema_v1.drop()
