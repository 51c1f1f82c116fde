"""Full-text search: each deal's search document, indexed on each back end.

PostgreSQL: a tsvector column with a GIN index. SQLite: an FTS5 table over the
documents (external content) with the triggers that keep it in step, in the same
transaction as the change. Existing deals get their documents here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_SQLITE_FTS = [
    "CREATE VIRTUAL TABLE opportunity_search_fts USING fts5("
    "document, content='opportunity_search', content_rowid='rowid', "
    "tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER opportunity_search_fts_insert AFTER INSERT ON opportunity_search BEGIN "
    "INSERT INTO opportunity_search_fts(rowid, document) VALUES (new.rowid, new.document); END",
    "CREATE TRIGGER opportunity_search_fts_delete AFTER DELETE ON opportunity_search BEGIN "
    "INSERT INTO opportunity_search_fts(opportunity_search_fts, rowid, document) "
    "VALUES ('delete', old.rowid, old.document); END",
    "CREATE TRIGGER opportunity_search_fts_update AFTER UPDATE ON opportunity_search BEGIN "
    "INSERT INTO opportunity_search_fts(opportunity_search_fts, rowid, document) "
    "VALUES ('delete', old.rowid, old.document); "
    "INSERT INTO opportunity_search_fts(rowid, document) VALUES (new.rowid, new.document); END",
]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "opportunity_search",
        sa.Column("opportunity_id", sa.Uuid(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR().with_variant(sa.Text(), "sqlite"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(["opportunity_id"], ["opportunities.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("opportunity_id"),
    )
    op.create_index(
        "ix_opportunity_search_vector",
        "opportunity_search",
        ["search_vector"],
        unique=False,
        postgresql_using="gin",
    )
    if not postgres:
        for statement in _SQLITE_FTS:
            op.execute(statement)
    # The documents of the deals opened before search existed.
    aggregate = "string_agg(n.text, chr(10))" if postgres else "group_concat(n.text, char(10))"
    newline = "chr(10)" if postgres else "char(10)"
    op.execute(
        "INSERT INTO opportunity_search (opportunity_id, document) "
        f"SELECT o.id, o.title || {newline} || coalesce(o.description || {newline}, '') "
        f"|| o.customer_name || {newline} || coalesce(("
        f"SELECT {aggregate} FROM notes n WHERE n.opportunity_id = o.id), '') "
        "FROM opportunities o"
    )
    if postgres:
        op.execute("UPDATE opportunity_search SET search_vector = to_tsvector('simple', document)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER opportunity_search_fts_{trigger}")
        op.execute("DROP TABLE opportunity_search_fts")
    op.drop_index("ix_opportunity_search_vector", table_name="opportunity_search")
    op.drop_table("opportunity_search")
