"""Completion callbacks: a job may name a target told when it ends.

Jobs gain ``callback_target``, ``callback_job_id`` (the callback job its
latest ending made) and ``callbacks`` (how many of its endings called back: the
next callback's idempotency key is ``callback:<id>:<callbacks + 1>``). A
partial index holds only jobs with a callback, for a target's delete, which
is refused while unfinished jobs would call it back.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CALLS_BACK = "callback_target IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("callback_target", sa.String(63), nullable=True))
        batch.add_column(sa.Column("callback_job_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("callbacks", sa.Integer(), nullable=False, server_default="0"))
    op.create_index(
        "ix_jobs_callback",
        "jobs",
        ["callback_target"],
        sqlite_where=sa.text(_CALLS_BACK),
        postgresql_where=sa.text(_CALLS_BACK),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_callback", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("callbacks")
        batch.drop_column("callback_job_id")
        batch.drop_column("callback_target")
