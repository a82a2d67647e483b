"""Applying the alembic migrations from code (``csjd migrate``, ``csjd serve``).

Alembic's environment runs its own event loop, so from inside a running loop
the upgrade is done in a worker thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config


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


def upgrade(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


async def upgrade_async(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
