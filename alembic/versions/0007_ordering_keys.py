"""Ordering keys: a target's jobs with one key go one at a time, in the order accepted.

Jobs gain ``ordering_key``, their place in the key's line (``ordering_seq``)
and, while they wait behind its head, the time they were given
(``not_before``). ``ordering_heads`` holds one row per line with jobs not
finished: its head and the place the next job takes. Two partial indexes hold
only jobs with a key, so jobs without one cost nothing more to store or claim.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEHIND = "state = 'scheduled' AND next_attempt_at IS NULL"
_KEYED = "ordering_key IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("ordering_key", sa.String(200), nullable=True))
        batch.add_column(sa.Column("ordering_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("not_before", sa.Float(), nullable=True))
    op.create_index(
        "ix_jobs_line",
        "jobs",
        ["target", "ordering_key", "ordering_seq"],
        sqlite_where=sa.text(_BEHIND),
        postgresql_where=sa.text(_BEHIND),
    )
    op.create_index(
        "ix_jobs_ordering_key",
        "jobs",
        ["ordering_key", "id"],
        sqlite_where=sa.text(_KEYED),
        postgresql_where=sa.text(_KEYED),
    )
    op.create_table(
        "ordering_heads",
        sa.Column("target", sa.String(63), primary_key=True),
        sa.Column("ordering_key", sa.String(200), primary_key=True),
        sa.Column("head_id", sa.String(36), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ordering_heads")
    op.drop_index("ix_jobs_ordering_key", table_name="jobs")
    op.drop_index("ix_jobs_line", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("not_before")
        batch.drop_column("ordering_seq")
        batch.drop_column("ordering_key")
