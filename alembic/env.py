"""Alembic environment: runs the migrations over csjd's async engine.

The URL comes from ``config.attributes["database_url"]`` when csjd runs the
migrations itself, else from the ``CSJD_*`` settings (the ``alembic`` command).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.storage.migrate import serialize_migrations
from app.storage.models import metadata

config = context.config


def _url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return str(url)
    from app.settings import Settings

    return Settings().database_url


def _run(connection: Connection) -> None:
    # before alembic looks at the version table: replicas starting together migrate
    # one after another (alembic then runs in the transaction this began)
    serialize_migrations(connection)
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    # like the store's engines: an error's text never shows parameters
    engine = create_async_engine(_url(), poolclass=pool.NullPool, hide_parameters=True)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
