"""Indexes the planner picks without statistics, and the ones GET /jobs lacked.

``ix_jobs_state`` (every row, by state) goes: on SQLite, which csjd never
analyses, the planner took it for any statement naming a set of states and
walked the whole backlog where a partial index would have read the few due
rows. Its uses move to two partial indexes, one for the unfinished states
(counts, the backlog per target) and one for the finished states (newest
first, counted). ``ix_jobs_target_state`` gives way to ``(target, id)``:
the backlog per target is answered by ``ix_jobs_active`` now, and a
target's jobs are listed newest first. ``(caller, id)`` serves a caller's
``GET /jobs`` without sorting all of its jobs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = "state IN ('scheduled', 'queued', 'running', 'retrying')"
_FINISHED = "state IN ('succeeded', 'failed', 'cancelled')"


def _partial(name: str, columns: list[str], where: str) -> None:
    op.create_index(
        name,
        "jobs",
        columns,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    op.drop_index("ix_jobs_state", table_name="jobs")
    op.drop_index("ix_jobs_target_state", table_name="jobs")
    _partial("ix_jobs_active", ["state", "target"], _ACTIVE)
    _partial("ix_jobs_finished", ["state", "id"], _FINISHED)
    op.create_index("ix_jobs_caller_id", "jobs", ["caller", "id"])
    op.create_index("ix_jobs_target_id", "jobs", ["target", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_target_id", table_name="jobs")
    op.drop_index("ix_jobs_caller_id", table_name="jobs")
    op.drop_index("ix_jobs_finished", table_name="jobs")
    op.drop_index("ix_jobs_active", table_name="jobs")
    op.create_index("ix_jobs_target_state", "jobs", ["target", "state"])
    op.create_index("ix_jobs_state", "jobs", ["state"])
