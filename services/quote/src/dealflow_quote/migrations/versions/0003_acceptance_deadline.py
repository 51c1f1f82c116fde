"""Quotes remember the acceptance put to the opportunity, and when its answer is due.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

So that a quote awaiting the opportunity's answer is asked again, then stops waiting
(DESIGN.md section 4; dealflow_quote.domain.lifecycle). A quote already awaiting an
answer when this runs is given what the row knows: accepted when it last changed,
answer due at once, so the next run of the job asks the opportunity again.
"""

import sqlalchemy as sa
from alembic import op

import dealflow_common.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = dealflow_common.db.UtcDateTime(timezone=True)
    op.add_column("quotes", sa.Column("acceptance_requested_by", sa.String(200), nullable=True))
    op.add_column("quotes", sa.Column("acceptance_requested_at", when, nullable=True))
    op.add_column("quotes", sa.Column("acceptance_via", sa.String(20), nullable=True))
    op.add_column("quotes", sa.Column("acceptance_answer_due_at", when, nullable=True))
    op.add_column("quotes", sa.Column("acceptance_asked_again", sa.Integer(), nullable=True))
    op.create_index(
        "ix_quotes_answer_due", "quotes", ["status", "acceptance_answer_due_at"], unique=False
    )
    op.execute(
        "UPDATE quotes SET acceptance_requested_by = 'unknown', "
        "acceptance_requested_at = updated_at, acceptance_via = 'api', "
        "acceptance_answer_due_at = updated_at, acceptance_asked_again = 0 "
        "WHERE status = 'accept_pending'"
    )


def downgrade() -> None:
    op.drop_index("ix_quotes_answer_due", table_name="quotes")
    # Batch mode: SQLite rebuilds the table, PostgreSQL drops the columns in place.
    with op.batch_alter_table("quotes") as batch:
        batch.drop_column("acceptance_asked_again")
        batch.drop_column("acceptance_answer_due_at")
        batch.drop_column("acceptance_via")
        batch.drop_column("acceptance_requested_at")
        batch.drop_column("acceptance_requested_by")
