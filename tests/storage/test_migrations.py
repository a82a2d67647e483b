"""One schema on both backends: the migrations build exactly what the models say."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.settings import Settings
from app.storage.base import Activity
from app.storage.factory import build_store
from app.storage.migrate import alembic_config, upgrade
from app.storage.models import metadata
from tests.faults.sqlite_lock import SqliteWriteLock
from tests.pg import PostgresDatabases
from tests.storage.test_store_contract import assert_counts_exact, minutes

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


def test_the_counts_migration_counts_the_jobs_already_stored(backend_url: str) -> None:
    """0006 fills the per-target counts from the jobs: the whole backlog, and the
    minutes of the last hour (accepted, and finished succeeded or failed)."""
    command.downgrade(alembic_config(backend_url), "0005")
    now = time.time()
    minute = int(now // 60 * 60) - 120  # a whole minute, two ago
    at, before = minute + 5, minute - 55  # in it, and in the one before
    rows = [
        ("q1", "billing", "queued", at, None),
        ("q2", "billing", "queued", at, None),
        ("s1", "billing", "scheduled", before, None),
        ("r1", "search", "running", at, None),
        ("ok", "billing", "succeeded", before, at),
        ("no", "search", "failed", at, at),
        ("gone", "search", "cancelled", at, at),
        ("old", "billing", "succeeded", now - 7200, now - 7000),
    ]

    def seed(sync: Connection) -> None:
        for name in ("billing", "search"):
            sync.execute(
                text(
                    "INSERT INTO targets (name, url, timeout_s, max_concurrency, max_attempts,"
                    " backoff_initial_s, backoff_max_s, max_retry_duration_s, headers, enabled,"
                    " created_at, updated_at) VALUES (:n, 'http://x/hook', 10, 16, 10, 1, 60,"
                    " 86400, '{}', true, 0, 0)"
                ),
                {"n": name},
            )
        for key, target, state, created, completed in rows:
            sync.execute(
                text(
                    "INSERT INTO jobs (id, caller, idempotency_key, fingerprint, target, payload,"
                    " state, attempts, deliveries, max_attempts, created_at, updated_at,"
                    " expires_at, completed_at) VALUES (:id, '', :id, 'f', :t, :p, :s, 0, 0, 1,"
                    " :c, :c, 9e9, :done)"
                ),
                {"id": key, "t": target, "p": b"{}", "s": state, "c": created, "done": completed},
            )
        sync.commit()

    _on(backend_url, seed)
    upgrade(backend_url)
    assert _drift(backend_url) == []

    async def counts() -> tuple[dict[str, dict[str, int]], list[Activity]]:
        store = build_store(Settings(database_url=backend_url))
        await store.open()
        try:
            await assert_counts_exact(store)
            return await store.backlog_by_target(), await store.activity(0, now + 60)
        finally:
            await store.close()

    backlog, activity = asyncio.run(counts())
    assert backlog == {"billing": {"queued": 2, "scheduled": 1}, "search": {"running": 1}}
    assert minutes(activity) == {
        ("billing", minute - 60): (2, 0, 0),
        ("billing", minute): (2, 1, 0),
        ("search", minute): (3, 0, 1),
    }
