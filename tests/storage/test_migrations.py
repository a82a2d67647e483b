"""One schema on both backends: the migrations build exactly what the models say."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.storage.migrate import alembic_config, upgrade
from app.storage.models import metadata
from tests.faults.sqlite_lock import SqliteWriteLock
from tests.pg import PostgresDatabases

T = TypeVar("T")


def _on(url: str, look: Callable[[Connection], T]) -> T:
    """Run ``look`` on a synchronous view of a fresh connection to ``url``."""

    async def go() -> T:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(look)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _drift(url: str) -> list[Any]:
    return _on(
        url,
        lambda sync: compare_metadata(
            MigrationContext.configure(sync, opts={"compare_type": True}), metadata
        ),
    )


def _indexes(url: str) -> set[str]:
    return _on(
        url,
        lambda sync: {
            i["name"] for t in ("jobs", "attempts") for i in inspect(sync).get_indexes(t)
        },
    )


EXPECTED_INDEXES = {
    "ix_jobs_claim_first",
    "ix_jobs_claim_retry",
    "ix_jobs_waiting",
    "ix_jobs_expiry",
    "ix_jobs_running",
    "ix_jobs_completed",
    "ix_jobs_active",
    "ix_jobs_finished",
    "ix_jobs_caller_id",
    "ix_jobs_target_id",
    "ix_attempts_job",
}


def test_an_empty_sqlite_file_migrates_to_the_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    upgrade(url)
    assert _drift(url) == []
    assert _indexes(url) >= EXPECTED_INDEXES
    # the state-led index that misled SQLite's planner is gone (see 0004)
    assert not _indexes(url) & {"ix_jobs_state", "ix_jobs_target_state"}


@pytest.mark.usefixtures("postgres")
def test_an_empty_postgres_database_migrates_to_the_models(postgres: PostgresDatabases) -> None:
    url = postgres.empty()
    upgrade(url)
    assert _drift(url) == []
    assert _indexes(url) >= EXPECTED_INDEXES
    upgrade(url)  # a second run is a no-op


def test_the_index_migration_goes_down_and_up_again(backend_url: str) -> None:
    command.downgrade(alembic_config(backend_url), "0003")
    assert {"ix_jobs_state", "ix_jobs_target_state"} <= _indexes(backend_url)
    upgrade(backend_url)
    assert _drift(backend_url) == []
    assert _indexes(backend_url) >= EXPECTED_INDEXES


@pytest.mark.slow
def test_migrations_started_together_on_one_sqlite_file_all_succeed(tmp_path: Path) -> None:
    """``upgrade`` from several processes at once (``csjd migrate`` itself refuses
    to run beside another csjd on the file; ``alembic upgrade`` does not): each
    migration holds the write lock throughout, so the others wait and find it done."""
    path = tmp_path / "fresh.db"
    sqlite3.connect(path).close()
    url = f"sqlite+aiosqlite:///{path}"
    migrate = f"from app.storage.migrate import upgrade; upgrade({url!r})"
    # a starting gate: the migrators queue behind another writer, then go at once
    with SqliteWriteLock(path, seconds=3):
        migrators = [
            subprocess.Popen(
                [sys.executable, "-c", migrate], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            for _ in range(4)
        ]
        outputs = [m.communicate(timeout=120)[0].decode(errors="replace") for m in migrators]
    assert [m.returncode for m in migrators] == [0, 0, 0, 0], "\n".join(outputs)
    assert _drift(url) == []
