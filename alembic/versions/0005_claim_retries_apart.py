"""Claims read first attempts and retries apart, so a retry bound skips nothing.

The retry budget bounds how many retries one claim may take. With one index
over all queued jobs, a claim under that bound would walk past every retry
left waiting to reach the first attempts behind them; one partial index for
each lets either be read in due order directly.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ["target", "next_attempt_at"]


def _partial(name: str, where: str) -> None:
    op.create_index(
        name, "jobs", _COLUMNS, sqlite_where=sa.text(where), postgresql_where=sa.text(where)
    )


def upgrade() -> None:
    _partial("ix_jobs_claim_first", "state = 'queued' AND deliveries = 0")
    _partial("ix_jobs_claim_retry", "state = 'queued' AND deliveries > 0")
    op.drop_index("ix_jobs_claim", table_name="jobs")


def downgrade() -> None:
    _partial("ix_jobs_claim", "state = 'queued'")
    op.drop_index("ix_jobs_claim_retry", table_name="jobs")
    op.drop_index("ix_jobs_claim_first", table_name="jobs")
