"""Shared fixtures: real SQLite files, the app over ASGI, a fake sender and clock."""

from __future__ import annotations

import asyncio
import gc
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from app.storage import sqlite as sqlite_engines
from app.storage.migrate import upgrade
from app.testing import FakeSender
from tests.pg import PostgresDatabases, require_postgres


@pytest.fixture(scope="module", autouse=True)
def leaves_nothing_open() -> Iterator[None]:
    """Each test module closes every socket and file it opened: what it left is found
    when it ends, and fails it, rather than whichever later test the garbage
    collector happens to run in (``filterwarnings = error`` makes each a failure)."""
    yield
    left: list[str] = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: left.append(repr(unraisable.exc_value))
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook
    if left:
        pytest.fail(f"this module left {len(left)} unclosed: " + "; ".join(left[:5]))


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database file; each test copies it instead of migrating again."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    require_postgres()
    databases = PostgresDatabases()
    databases.prepare()
    yield databases
    databases.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path, migrated_template: Path) -> str:
    """A fresh, migrated database of each backend (the storage contract runs on both)."""
    if request.param == "sqlite":
        path = tmp_path / "csjd.db"
        shutil.copy(migrated_template, path)
        return f"sqlite+aiosqlite:///{path}"
    databases: PostgresDatabases = request.getfixturevalue("postgres")
    return databases.fresh()


@pytest.fixture
def db_url(tmp_path: Path, migrated_template: Path) -> str:
    path = tmp_path / "csjd.db"
    shutil.copy(migrated_template, path)
    return f"sqlite+aiosqlite:///{path}"


def make_settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "allow_private_targets": True,
        "drain_timeout_s": 2,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()


class Api:
    """An app running its lifespan, and a client that speaks to it over ASGI."""

    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway

    async def put_target(self, name: str = "billing", **fields: Any) -> httpx.Response:
        body = {"url": "http://127.0.0.1:9/hook", **fields}
        response = await self.client.put(f"/targets/{name}", json=body)
        assert response.status_code in (200, 201), response.text
        return response

    async def post_job(
        self, key: str | None = "key-1", body: dict[str, Any] | None = None, **headers: str
    ) -> httpx.Response:
        all_headers = dict(headers)
        if key is not None:
            all_headers["Idempotency-Key"] = key
        return await self.client.post(
            "/jobs", json=body or {"target": "billing", "payload": {"n": 1}}, headers=all_headers
        )

    async def wait_for_job(
        self, job_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = (await self.client.get(f"/jobs/{job_id}")).json()
            if predicate(job):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} never got there; last seen {job}")
            await asyncio.sleep(0.01)


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def api_factory(db_url: str) -> AsyncIterator[ApiFactory]:
    stack: list[tuple[Any, httpx.AsyncClient]] = []

    async def start(*, sender: Any = None, clock: Any = None, **overrides: Any) -> Api:
        app = create_app(
            make_settings(overrides.pop("database_url", db_url), **overrides),
            sender=sender or FakeSender(),
            clock=clock,
        )
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://csjd.test"
        )
        stack.append((lifespan, client))
        return Api(app, client)

    yield start
    for lifespan, client in reversed(stack):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def api(api_factory: ApiFactory, sender: FakeSender) -> Api:
    return await api_factory(sender=sender)


@pytest.fixture
def quick_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite gives up waiting for its write lock after 0.2 s (10 s in production)."""
    monkeypatch.setattr(sqlite_engines, "BUSY_TIMEOUT_MS", 200)


def _hold_write_lock(path: str, seconds: float, held: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


LockHolder = Callable[[float], None]


@pytest.fixture
def sqlite_lock_holder(db_url: str) -> Iterator[LockHolder]:
    """Holds ``db_url``'s write lock for some seconds from another connection, as a
    second process would; returns once the lock is held."""
    threads: list[threading.Thread] = []

    def hold(seconds: float) -> None:
        held = threading.Event()
        path = db_url.split("///", 1)[1]
        thread = threading.Thread(target=_hold_write_lock, args=(path, seconds, held))
        thread.start()
        threads.append(thread)
        assert held.wait(5)

    yield hold
    for thread in threads:
        thread.join(30)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never held")
        time.sleep(0.01)
