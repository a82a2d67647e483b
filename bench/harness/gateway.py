"""csjd as the benchmark runs it: a fresh database per scenario (a SQLite file
in the temporary directory, or a Postgres database created through
``--pg-admin-url`` and dropped when the scenario ends), ``csjd serve`` (or
``csjd serve --workers N``) on a free port with no ``CSJD_*`` setting but the
benchmark's own, targets registered through its API, and its JSON log summed
up once it has stopped.
API calls only one scenario makes (failed jobs, a target's backlog) stay in
that scenario's module. Scenarios that insert jobs straight into a SQLite file
add to the per-target counts what csjd's writes would have (``seed_counts``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
from sqlalchemy import Engine, inspect
from sqlalchemy.dialects.sqlite import insert

from app.storage.models import target_backlog, target_minutes
from bench.harness import BenchError, say
from bench.harness.procs import (
    HOST,
    POLL_S,
    READY_DEADLINE_S,
    Service,
    child_env,
    free_port,
)

#: where ``--db postgres`` creates (and drops) its database, unless ``--pg-admin-url``
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_CONNECT_TIMEOUT_S = 10.0
#: warnings every csjd logs in this setup (no API keys), left out of the log counts
EXPECTED_WARNINGS = frozenset({"auth_disabled"})
#: ``CSJD_*`` settings every csjd of this run gets (``--delivery-client``)
EVERY_CSJD: dict[str, str] = {}


async def pg_admin(admin_url: str, statement: str) -> None:
    """Run one statement (outside a transaction) on a fresh connection to ``admin_url``."""
    try:
        conn = await asyncpg.connect(admin_url, timeout=PG_CONNECT_TIMEOUT_S)
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise BenchError(f"cannot connect to {admin_url}: {type(exc).__name__}: {exc}") from None
    try:
        await conn.execute(statement)
    except asyncpg.PostgresError as exc:
        raise BenchError(f"{statement}: {type(exc).__name__}: {exc}") from None
    finally:
        await conn.close()


def seed_counts(
    engine: Engine,
    backlog: dict[tuple[str, str], int],
    minutes: dict[tuple[str, int], tuple[int, int, int]] | None = None,
) -> bool:
    """Add to a SQLite file's per-target counts (``app/storage/counts.py``) what
    csjd's writes would have for jobs inserted by hand: ``backlog`` by (target,
    unfinished state), ``minutes`` by (target, minute) as (accepted, succeeded,
    failed). False, and nothing written, on a schema from before the counts."""
    if not inspect(engine).has_table(target_backlog.name):
        return False
    rows = [{"target": t, "state": s, "count": n} for (t, s), n in backlog.items()]
    by_minute = [
        {"target": t, "minute": m, "accepted": a, "succeeded": s, "failed": f}
        for (t, m), (a, s, f) in (minutes or {}).items()
    ]
    with engine.begin() as conn:
        if rows:
            add = insert(target_backlog)
            conn.execute(
                add.on_conflict_do_update(
                    index_elements=["target", "state"],
                    set_={"count": target_backlog.c["count"] + add.excluded["count"]},
                ),
                rows,
            )
        if by_minute:
            add = insert(target_minutes)
            kinds = ("accepted", "succeeded", "failed")
            conn.execute(
                add.on_conflict_do_update(
                    index_elements=["target", "minute"],
                    set_={k: target_minutes.c[k] + add.excluded[k] for k in kinds},
                ),
                by_minute,
            )
    return True


def pg_database_url(admin_url: str, name: str) -> str:
    """``admin_url`` (its user, host, port, options) pointing at database ``name``, for csjd."""
    return urlsplit(admin_url)._replace(scheme="postgresql+asyncpg", path=f"/{name}").geturl()


@contextlib.asynccontextmanager
async def fresh_database(
    args: argparse.Namespace, tmp: Path, sqlite_name: str
) -> AsyncIterator[str]:
    """A fresh database for one scenario; yields its ``CSJD_DATABASE_URL``.

    SQLite: the file ``<tmp>/<sqlite_name>`` (it goes with the temp dir).
    Postgres: a database ``bench_<random hex>`` created through
    ``--pg-admin-url``, and dropped ``WITH (FORCE)`` when the block ends,
    however it ends (``--keep`` does not keep it).
    """
    if args.db == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp / sqlite_name}"
        return
    name = f"bench_{secrets.token_hex(6)}"
    await pg_admin(args.pg_admin_url, f'CREATE DATABASE "{name}"')
    say(f"created the Postgres database {name}")
    try:
        yield pg_database_url(args.pg_admin_url, name)
    finally:
        try:
            await pg_admin(args.pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except BenchError as exc:
            say(f"could not drop the Postgres database {name}: {exc}")
        else:
            say(f"dropped the Postgres database {name}")


def start_csjd(
    tmp: Path,
    name: str,
    database_url: str,
    role: str = "all",
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> Service:
    """``csjd serve`` on a free port and ``database_url``; log to ``<tmp>/<name>.log``.

    ``extra_env`` adds (or overrides) ``CSJD_*`` settings, ``CSJD_MAX_BACKLOG`` say.
    ``workers`` above 1 runs ``csjd serve --workers N`` instead of ``--role``.
    """
    port = free_port()
    env = child_env(
        {
            "CSJD_DATABASE_URL": database_url,
            "CSJD_ALLOW_PRIVATE_TARGETS": "true",
            "CSJD_LOG_FORMAT": "json",
            **EVERY_CSJD,
            **(extra_env or {}),
        }
    )
    argv = [sys.executable, "-m", "app", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--role", role] if workers == 1 else ["--workers", str(workers)]
    say(f"starting {name} on port {port} (database {database_url})")
    return Service.start(name, argv, port=port, tmp=tmp, env=env)


async def wait_workers(gateway: Service) -> None:
    """Wait until a ``csjd serve --workers`` logged that every worker is up."""
    deadline = time.monotonic() + READY_DEADLINE_S
    while b'"workers_started"' not in gateway.log_path.read_bytes():
        gateway.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(
                f"{gateway.name} did not log workers_started within {READY_DEADLINE_S:g}s; "
                f"its log ends:\n{gateway.log_tail()}"
            )
        await asyncio.sleep(POLL_S)


@dataclass
class LogSummary:
    """What one csjd's JSON log holds: delivery attempts, and what went wrong."""

    delivery_attempts: int = 0
    warnings: int = 0
    errors: int = 0
    #: lines that are not a JSON event (a traceback printed past the logger, say)
    other_lines: int = 0
    samples: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path, max_samples: int = 5) -> LogSummary:
        summary = cls()
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            return summary
        for line in lines:
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
                level, name = event["level"], event["event"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                summary.other_lines += 1
                summary.sample(line.decode(errors="replace"), max_samples)
                continue
            if name == "delivery":
                summary.delivery_attempts += 1
            if level == "warning" and name not in EXPECTED_WARNINGS:
                summary.warnings += 1
            elif level in ("error", "critical"):
                summary.errors += 1
            else:
                continue
            summary.sample(line.decode(errors="replace"), max_samples)
        return summary

    def sample(self, line: str, max_samples: int) -> None:
        if len(self.samples) < max_samples:
            self.samples.append(line[:500])


def report_log(gateway: Service) -> LogSummary:
    """Read a stopped csjd's log; say what it logged beyond the expected, if anything."""
    summary = LogSummary.read(gateway.log_path)
    if summary.warnings or summary.errors or summary.other_lines:
        say(
            f"{gateway.name} logged {summary.errors} errors, {summary.warnings} warnings "
            f"and {summary.other_lines} other lines; the first:"
        )
        for line in summary.samples:
            say(f"  {line}")
    return summary


async def put_target(
    session: aiohttp.ClientSession, gateway: Service, name: str, target: dict[str, Any]
) -> None:
    async with session.put(gateway.base_url + f"/targets/{name}", json=target) as response:
        if response.status not in (200, 201):
            raise BenchError(
                f"PUT /targets/{name} answered {response.status}: {await response.text()}"
            )


async def register_paused(
    control: aiohttp.ClientSession, gateway: Service, sink: Service
) -> dict[str, Any]:
    """Wait for ``gateway`` and register target ``bench`` disabled (queued, not sent)."""
    await gateway.wait_ready(control, "/readyz")
    target = {"url": f"{sink.base_url}/hook", "max_concurrency": 256, "enabled": False}
    await put_target(control, gateway, "bench", target)
    return target
