"""Targets, jobs and their attempts.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WAITING = "state IN ('scheduled', 'retrying')"
_UNFINISHED = "state IN ('scheduled', 'queued', 'retrying')"


def _partial(name: str, columns: list[str], where: str) -> None:
    op.create_index(
        name,
        "jobs",
        columns,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    op.create_table(
        "targets",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("rate_limit_per_s", sa.Float(), nullable=True),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("backoff_initial_s", sa.Float(), nullable=False),
        sa.Column("backoff_max_s", sa.Float(), nullable=False),
        sa.Column("max_retry_duration_s", sa.Float(), nullable=False),
        sa.Column("secret", sa.String(512), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(512), nullable=True),
        sa.Column("paused_until", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("caller", sa.String(128), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("target", sa.String(63), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("completed_at", sa.Float(), nullable=True),
        sa.Column("claimed_at", sa.Float(), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(1024), nullable=True),
        sa.Column("failure_reason", sa.String(32), nullable=True),
        sa.UniqueConstraint("caller", "idempotency_key", name="uq_jobs_caller_key"),
    )
    _partial("ix_jobs_claim", ["target", "next_attempt_at"], "state = 'queued'")
    _partial("ix_jobs_waiting", ["next_attempt_at"], _WAITING)
    _partial("ix_jobs_expiry", ["expires_at"], _UNFINISHED)
    _partial("ix_jobs_running", ["lease_expires_at"], "lease_expires_at IS NOT NULL")
    _partial("ix_jobs_completed", ["completed_at"], "completed_at IS NOT NULL")
    op.create_index("ix_jobs_target_state", "jobs", ["target", "state"])
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "job_id",
            sa.String(36),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.String(1024), nullable=True),
        sa.Column("response_excerpt", sa.String(2048), nullable=True),
    )
    op.create_index("ix_attempts_job", "attempts", ["job_id", "n"])


def downgrade() -> None:
    op.drop_table("attempts")
    op.drop_table("jobs")
    op.drop_table("targets")
