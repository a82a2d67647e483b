"""Fresh PostgreSQL databases for tests, from a migrated template.

The server is the one on this machine (127.0.0.1:5432, trust auth), or
``CSJD_TEST_POSTGRES_URL``. Without a reachable server the Postgres tests
skip with a clear message, except under ``CI=true``, where they must run.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg

from app.storage.migrate import upgrade
from tests.needs import missing

ADMIN_URL = os.environ.get("CSJD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _run(sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def _url(database: str) -> str:
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


def require_postgres() -> None:
    try:
        _run("SELECT 1")
    except (OSError, asyncpg.PostgresError) as exc:
        missing(
            f"PostgreSQL is not reachable at {ADMIN_URL}: {exc}",
            in_ci="the Postgres tests must run",
        )


class PostgresDatabases:
    """Makes migrated databases by copying one template; drops them afterwards."""

    def __init__(self) -> None:
        self.template = f"csjd_tpl_{uuid.uuid4().hex[:10]}"
        self.made: list[str] = []

    def prepare(self) -> None:
        _run(f"CREATE DATABASE {self.template}")
        upgrade(_url(self.template))

    def fresh(self) -> str:
        name = f"csjd_t_{uuid.uuid4().hex[:12]}"
        _run(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        self.made.append(name)
        return _url(name)

    def empty(self) -> str:
        name = f"csjd_e_{uuid.uuid4().hex[:12]}"
        _run(f"CREATE DATABASE {name}")
        self.made.append(name)
        return _url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        _run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        for name in [*self.made, self.template]:
            _run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
