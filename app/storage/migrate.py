"""Applying the alembic migrations from code (``csjd migrate``, ``csjd serve``).

Alembic's environment runs its own event loop, so from inside a running loop
the upgrade is done in a worker thread.

Every replica migrates when it starts, and replicas start together: without a
lock two of them would both find no ``alembic_version`` table, both create it,
and one would die on the other's. ``serialize_migrations`` makes each migration
wait for the one before it, whose end the next then finds at head.

An upgrade answers the ``Revision`` the database is at afterwards, for the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from app.storage import postgres, sqlite

#: each backend's lock for a migration, by the name SQLAlchemy gives its dialect
_MIGRATION_LOCKS: dict[str, Callable[[Connection], None]] = {
    "postgresql": postgres.lock_for_migration,
    "sqlite": sqlite.lock_for_migration,
}


def migrations_dir() -> Path:
    beside_package = Path(__file__).resolve().parents[2] / "alembic"
    if (beside_package / "env.py").exists():
        return beside_package
    return Path.cwd() / "alembic"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["database_url"] = database_url
    return config


def serialize_migrations(connection: Connection) -> None:
    """Wait until no one else migrates this database, then keep it so until this
    connection's transaction ends. Call first on the migration's connection, so
    alembic runs inside the transaction this opens."""
    lock = _MIGRATION_LOCKS.get(connection.dialect.name)
    if lock is not None:
        lock(connection)


@dataclass(frozen=True, slots=True)
class Revision:
    """One migration: its alembic revision id, its file, its docstring's first paragraph."""

    id: str
    file: str
    description: str


def head(config: Config) -> Revision:
    """The newest migration of this csjd (an upgrade leaves the database there)."""
    scripts = ScriptDirectory.from_config(config)
    newest = scripts.get_current_head()
    script = None if newest is None else scripts.get_revision(newest)
    if script is None:  # pragma: no cover - the migrations ship with the package
        raise RuntimeError(f"no migrations in {migrations_dir()}")
    return Revision(
        id=script.revision,
        file=Path(script.path).name,
        description=" ".join((script.doc or "").split()),  # its first paragraph
    )


def upgrade(database_url: str) -> Revision:
    config = alembic_config(database_url)
    command.upgrade(config, "head")
    return head(config)


async def upgrade_async(database_url: str) -> Revision:
    return await asyncio.to_thread(upgrade, database_url)
