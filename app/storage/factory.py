"""Builds the configured ``JobStore`` (the composition root calls this)."""

from __future__ import annotations

from app.settings import Settings
from app.storage import postgres, sqlite
from app.storage.sql import SqlJobStore


def build_store(settings: Settings, *, shared: bool = False) -> SqlJobStore:
    """``shared``: other processes write to the same database too (always, on Postgres)."""
    if settings.is_postgres:
        return SqlJobStore(
            postgres.create_database(settings),
            postgres.PostgresDialect(),
            max_backlog=settings.max_backlog,
        )
    return SqlJobStore(
        sqlite.create_database(settings),
        sqlite.SqliteDialect(shared=shared),
        max_backlog=settings.max_backlog,
    )
