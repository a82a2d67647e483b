"""Builds the configured ``JobStore`` (the composition root calls this)."""

from __future__ import annotations

from app.settings import Settings
from app.storage import postgres, sqlite
from app.storage.sql import SqlJobStore


def build_store(settings: Settings, *, shared: bool = False) -> SqlJobStore:
    """``shared``: other processes write to the same database too."""
    if settings.is_postgres:
        writer, reader = postgres.create_engines(settings)
    else:
        writer, reader = sqlite.create_engines(settings)
    return SqlJobStore(
        writer, reader, max_backlog=settings.max_backlog, shared=shared or settings.is_postgres
    )
