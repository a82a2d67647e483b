"""Postgres engines for the ``SqlJobStore``, and the wake-up channel between replicas.

Several gateways may share one Postgres database. Writes still go through a
group committer per process (one transaction per batch); reads use their own
pool. Both pools ping connections before use, so a database restart costs
the requests that were under way, not the gateway.

Replicas wake each other with ``NOTIFY csjd_jobs`` from the intake
transaction (once per batch) and a ``LISTEN`` connection in every replica;
polling remains the fallback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.settings import Settings
from app.storage.engine import AsyncDatabase
from app.storage.models import ENGINE_JSON

log = logging.getLogger("csjd.storage")

CHANNEL = "csjd_jobs"


#: a server that stops answering (rather than refusing) is given up on after these:
#: connecting, one statement, and a transaction left idle by a replica cut off
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_S = 30
IDLE_IN_TRANSACTION_MS = 60_000


def create_database(settings: Settings) -> AsyncDatabase:
    """Writer and reader engines for the configured Postgres database."""
    connect_args = {
        "timeout": CONNECT_TIMEOUT_S,
        "command_timeout": STATEMENT_TIMEOUT_S,
        "server_settings": {"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)},
    }
    # parameters hold secrets, header values and payloads: no error's text may show them
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "hide_parameters": True,
        "connect_args": connect_args,
        **ENGINE_JSON,
    }
    writer = create_async_engine(settings.database_url, pool_size=2, max_overflow=2, **options)
    reader = create_async_engine(settings.database_url, pool_size=4, max_overflow=8, **options)
    return AsyncDatabase(writer, reader)


def asyncpg_dsn(database_url: str) -> str:
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def listen(database_url: str, on_notify: Callable[[], None]) -> None:
    """Call ``on_notify`` for every notification until cancelled; raises if the link drops."""
    conn: Any = await asyncpg.connect(asyncpg_dsn(database_url))
    lost = asyncio.Event()
    try:
        await conn.add_listener(CHANNEL, lambda *_: on_notify())
        conn.add_termination_listener(lambda *_: lost.set())
        while not lost.is_set():
            try:
                async with asyncio.timeout(10):
                    await lost.wait()
            except TimeoutError:
                await conn.execute("SELECT 1")  # notice a dead link even when idle
        raise ConnectionError("the LISTEN connection to Postgres was lost")
    finally:
        if not conn.is_closed():
            await conn.close(timeout=2)
