"""Fixtures of the fault harness (see ``tests/faults/__init__.py``); each one stops
what it started, whatever the test did."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from app.testing import Sink
from tests.e2e.gateway import GatewayProcess
from tests.faults.postgres import LOCK_WATCH, PrivatePostgres
from tests.faults.sqlite_lock import SqliteWriteLock
from tests.faults.targets import Behaviour, HostileTarget

PostgresFactory = Callable[..., PrivatePostgres]
ReplicaFactory = Callable[..., GatewayProcess]


@pytest.fixture
def private_postgres_factory() -> Iterator[PostgresFactory]:
    """``make(settings=None, start=True)``: a private server; all are stopped and
    removed at teardown."""
    made: list[PrivatePostgres] = []

    def make(settings: Mapping[str, str] | None = None, *, start: bool = True) -> PrivatePostgres:
        server = PrivatePostgres(settings=settings)
        made.append(server)
        return server.start() if start else server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def private_postgres(private_postgres_factory: PostgresFactory) -> PrivatePostgres:
    """A running private server whose log names lock waits and deadlocks."""
    return private_postgres_factory(LOCK_WATCH)


@pytest.fixture
def replica_factory(tmp_path: Path) -> Iterator[ReplicaFactory]:
    """``make(database_url, name=..., clock_skew_s=0, **env)``: a ``csjd serve``
    process (not started yet) in a folder of its own; all are stopped at teardown."""
    made: list[GatewayProcess] = []

    def make(
        database_url: str, *, name: str | None = None, clock_skew_s: int = 0, **env: str
    ) -> GatewayProcess:
        workdir = tmp_path / (name or f"replica-{len(made)}")
        workdir.mkdir(exist_ok=True)
        gateway = GatewayProcess(
            workdir, database_url=database_url, clock_skew_s=clock_skew_s, **env
        )
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.stop()


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


@pytest.fixture
def hostile_target() -> Iterator[Callable[..., HostileTarget]]:
    """``make(behaviour, **options)``: a running ``HostileTarget``, stopped at teardown."""
    with ExitStack() as stack:

        def make(behaviour: Behaviour, **options: Any) -> HostileTarget:
            return stack.enter_context(HostileTarget(behaviour, **options))

        yield make


@pytest.fixture
def sqlite_write_lock() -> Iterator[Callable[[Path, float], SqliteWriteLock]]:
    """``hold(path, seconds)``: returns once another process holds the file's write
    lock; released at teardown at the latest."""
    with ExitStack() as stack:

        def hold(path: Path, seconds: float) -> SqliteWriteLock:
            return stack.enter_context(SqliteWriteLock(path, seconds))

        yield hold
