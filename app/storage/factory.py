"""Builds the configured ``JobStore`` (the composition root calls this)."""

from __future__ import annotations

from app.settings import Settings
from app.storage import postgres, sqlite
from app.storage.engine import Database
from app.storage.sql import SqlJobStore


def build_store(settings: Settings, *, shared: bool = False) -> SqlJobStore:
    """``shared``: other processes write to the same database too."""
    database: Database = (
        postgres.create_database(settings)
        if settings.is_postgres
        else sqlite.create_database(settings)
    )
    return SqlJobStore(
        database, max_backlog=settings.max_backlog, shared=shared or settings.is_postgres
    )
