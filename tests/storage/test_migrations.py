"""One schema on both backends: the migrations build exactly what the models say."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.storage.migrate import upgrade
from app.storage.models import metadata
from tests.pg import PostgresDatabases


def _drift(url: str) -> list[Any]:
    async def go() -> list[Any]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: compare_metadata(
                        MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                    )
                )
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _indexes(url: str) -> set[str]:
    async def go() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: {
                        i["name"]
                        for t in ("jobs", "attempts")
                        for i in inspect(sync).get_indexes(t)
                    }
                )
        finally:
            await engine.dispose()

    return asyncio.run(go())


EXPECTED_INDEXES = {
    "ix_jobs_claim",
    "ix_jobs_waiting",
    "ix_jobs_expiry",
    "ix_jobs_running",
    "ix_jobs_completed",
    "ix_jobs_target_state",
    "ix_jobs_state",
    "ix_attempts_job",
}


def test_an_empty_sqlite_file_migrates_to_the_models(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    upgrade(url)
    assert _drift(url) == []
    assert _indexes(url) >= EXPECTED_INDEXES


@pytest.mark.usefixtures("postgres")
def test_an_empty_postgres_database_migrates_to_the_models(postgres: PostgresDatabases) -> None:
    url = postgres.empty()
    upgrade(url)
    assert _drift(url) == []
    assert _indexes(url) >= EXPECTED_INDEXES
    upgrade(url)  # a second run is a no-op
