"""One schema on both backends: the migrations build exactly what the models say."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.storage.migrate import upgrade
from app.storage.models import metadata
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
