"""Per-target counts kept by the writes: the backlog by state, and what each minute saw.

The dashboard and ``GET /targets`` counted the backlog with a ``GROUP BY``
over every unfinished job, and the dashboard's throughput from the jobs of
its last 15 minutes: a cost that grew with the jobs stored. ``target_backlog``
holds how many of a target's jobs are in each unfinished state, and
``target_minutes`` how many it accepted and finished (succeeded, failed) in
each minute; every write that moves a job keeps them in its own transaction
(``app/storage/counts.py``). Both are filled here from the jobs already
stored: the backlog whole, the minutes for the last hour (what maintenance
keeps).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-12
"""

import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = "state IN ('scheduled', 'queued', 'running', 'retrying')"
#: the minutes filled from the jobs already stored (maintenance keeps as many)
_MINUTES_KEPT_S = 3600


def _minute(column: str, dialect: str) -> str:
    """SQL for the start of the minute a timestamp falls in, in epoch seconds."""
    if dialect == "postgresql":
        return f"CAST(floor({column} / 60) AS BIGINT) * 60"
    return f"CAST({column} / 60 AS INTEGER) * 60"  # CAST truncates: floor, for times after 1970


def upgrade() -> None:
    op.create_table(
        "target_backlog",
        sa.Column("target", sa.String(63), primary_key=True),
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "target_minutes",
        sa.Column("target", sa.String(63), primary_key=True),
        sa.Column("minute", sa.BigInteger(), primary_key=True),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("succeeded", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
    )
    dialect = op.get_bind().dialect.name
    op.execute(
        "INSERT INTO target_backlog (target, state, count) "
        f"SELECT target, state, count(*) FROM jobs WHERE {_ACTIVE} GROUP BY target, state"
    )
    created, completed = _minute("created_at", dialect), _minute("completed_at", dialect)
    since = int(time.time()) // 60 * 60 - _MINUTES_KEPT_S
    op.execute(
        sa.text(
            "INSERT INTO target_minutes (target, minute, accepted, succeeded, failed) "
            "SELECT target, minute, sum(a), sum(s), sum(f) FROM ("
            f"SELECT target, {created} AS minute, 1 AS a, 0 AS s, 0 AS f FROM jobs "
            "WHERE created_at >= :since "
            "UNION ALL "
            f"SELECT target, {completed} AS minute, 0 AS a, "
            "CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END AS s, "
            "CASE WHEN state = 'failed' THEN 1 ELSE 0 END AS f FROM jobs "
            "WHERE completed_at IS NOT NULL AND completed_at >= :since "
            "AND state IN ('succeeded', 'failed')"
            ") AS seen GROUP BY target, minute"
        ).bindparams(since=since)
    )


def downgrade() -> None:
    op.drop_table("target_minutes")
    op.drop_table("target_backlog")
