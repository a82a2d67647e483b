"""The store the dispatcher's tests run on, made in one place, and harnesses over it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from app.core.clock import Clock, SystemClock
from app.dispatch.reqwest_sender import ReqwestSender
from app.dispatch.sender import AiohttpSender, Sender
from app.settings import Settings
from app.storage.base import JobStore
from app.storage.factory import build_store
from app.storage.memory import MemoryJobStore
from app.storage.sql import SqlJobStore
from app.testing import FakeSender
from tests.dispatch.harness import Harness

Start = Callable[..., Awaitable[Harness]]
RealSender = type[AiohttpSender] | type[ReqwestSender]


@pytest.fixture(params=[AiohttpSender, ReqwestSender], ids=["aiohttp", "reqwest"])
def real_sender(request: pytest.FixtureRequest) -> RealSender:
    """Each real sender in turn: both keep the seam's promise the same way."""
    cls: RealSender = request.param
    return cls


@pytest.fixture
async def sqlite_store(db_url: str) -> AsyncIterator[SqlJobStore]:
    """A real SQLite store, for the tests that are about SQLite itself."""
    s = build_store(Settings(database_url=db_url))
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def store() -> AsyncIterator[JobStore]:
    """The store every other test in this package runs on: the memory store, the
    same contract as SQLite's and Postgres's (``tests/storage``)."""
    s = MemoryJobStore(max_backlog=Settings().max_backlog)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def start(store: JobStore) -> AsyncIterator[Start]:
    """Starts a dispatcher over ``store`` (or over a wrapper of it); stops it after the test.

    Options are the dispatcher's (``max_inflight``, ``timings``, ``containment``);
    the sender is a ``FakeSender`` and the clock the system's unless given."""
    started: list[Harness] = []

    async def start_one(
        *,
        sender: Sender | None = None,
        clock: Clock | None = None,
        over: JobStore | None = None,
        max_inflight: int = Settings.model_fields["max_inflight"].default,
        **options: Any,
    ) -> Harness:
        harness = Harness(
            over or store,
            sender or FakeSender(),
            clock or SystemClock(),
            max_inflight=max_inflight,
            **options,
        )
        await harness.start()
        started.append(harness)
        return harness

    yield start_one
    for harness in reversed(started):
        await harness.stop()
