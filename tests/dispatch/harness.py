"""The dispatcher driven directly: one store, a sender behind the seam, a clock; no API.

A test puts targets and jobs straight into the store and wakes the dispatcher
as the API would, then waits on the store for what the dispatcher did.
``conftest.py`` makes the store (one fixture) and starts harnesses on it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from app.core.attempt import AttemptRecord
from app.core.clock import Clock
from app.core.ids import uuid7
from app.core.job import JobRecord, JobState, NewJob
from app.core.request import Request
from app.core.target import TargetRecord, TargetSpec
from app.dispatch.loop import Dispatcher, LiveState
from app.dispatch.maintenance import Maintenance
from app.dispatch.sender import Failure, Response, Sender
from app.metrics import Metrics
from app.storage.base import JobStore
from app.supervisor import Supervisor
from app.testing import FakeClock, FakeSender

URL = "http://127.0.0.1:9/hook"
#: what the harness gives in-flight deliveries when it stops (the app tests' drain)
DRAIN_S = 2.0


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never held")
        await asyncio.sleep(0.005)


class HangingSender(FakeSender):
    """Holds every request until released; counts how many are in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.inflight = 0
        self.peak = 0
        self.by_url: dict[str, int] = {}

    async def send(self, request: Request) -> Response | Failure:
        self.inflight += 1
        self.by_url[request.url] = self.by_url.get(request.url, 0) + 1
        self.peak = max(self.peak, self.inflight)
        try:
            await self.release.wait()
            return await super().send(request)
        finally:
            self.inflight -= 1
            self.by_url[request.url] -= 1


def maintenance_on(
    store: Any,
    clock: Clock,
    *,
    metrics: Metrics | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> Maintenance:
    """Maintenance on ``store`` (a real one, or a wrapper standing in for it) with a
    seeded rng, the shortest retention and a supervisor of its own."""
    return Maintenance(
        store,
        clock=clock,
        rng=random.Random(1).random,
        metrics=metrics or Metrics(),
        retention_s=86400,
        supervisor=Supervisor(),
        monotonic=monotonic,
    )


class Harness:
    """A dispatcher over ``store``, with what a test does around it."""

    def __init__(
        self,
        store: JobStore,
        sender: Sender,
        clock: Clock,
        *,
        max_inflight: int,
        **options: Any,
    ) -> None:
        """``options`` go to the ``Dispatcher`` (``timings``, ``containment``)."""
        self.store = store
        self.sender = sender
        self.clock = clock
        self.metrics = Metrics()
        self.supervisor = Supervisor()
        self.dispatcher = Dispatcher(
            store,
            sender,
            clock=clock,
            rng=random.Random(1).random,
            metrics=self.metrics,
            max_inflight=max_inflight,
            supervisor=self.supervisor,
            **options,
        )

    async def start(self) -> None:
        await self.dispatcher.start()

    async def stop(self) -> None:
        """As the gateway stops: drain, then the loops, then the sender."""
        await self.dispatcher.stop(DRAIN_S)
        await self.supervisor.stop()
        await self.sender.close()

    # -- what a producer and an operator do -------------------------------------

    async def put_target(self, name: str = "billing", *, url: str = URL, **fields: Any) -> None:
        await self.store.put_target(TargetSpec(name=name, url=url, **fields), self.clock.now())
        self.dispatcher.targets_changed()

    async def enqueue(
        self,
        key: str = "key-1",
        *,
        target: str = "billing",
        payload: bytes = b'{"n":1}',
        headers: Mapping[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> JobRecord:
        """A job as the API accepts it, waking the dispatcher if it is due now."""
        now = self.clock.now()
        enqueued = await self.store.enqueue(
            NewJob(
                id=uuid7(int(now * 1000)),
                caller="",
                idempotency_key=key,
                fingerprint=key,
                target=target,
                payload=payload,
                headers=headers,
                max_attempts=None,
                next_attempt_at=now + delay_s,
                expires_at=None,
                created_at=now,
            )
        )
        if enqueued.job.state is JobState.QUEUED:
            self.dispatcher.wake()
        return enqueued.job

    async def cancel(self, job_id: str) -> None:
        await self.store.cancel("", job_id, self.clock.now())

    def advance(self, seconds: float) -> None:
        """Move the fake clock on and wake the dispatcher, as time coming due would."""
        assert isinstance(self.clock, FakeClock), "only a fake clock moves at will"
        self.clock.advance(seconds)
        self.dispatcher.wake()

    # -- what a test reads -------------------------------------------------------

    async def job(self, job_id: str) -> JobRecord:
        job = await self.store.get_job("", job_id)
        assert job is not None
        return job

    async def wait_for_job(
        self, job_id: str, predicate: Callable[[JobRecord], bool], timeout: float = 10.0
    ) -> JobRecord:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if predicate(job):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} never got there; last seen {job}")
            await asyncio.sleep(0.01)

    async def attempts(self, job_id: str) -> list[AttemptRecord]:
        return await self.store.list_attempts("", job_id) or []

    async def target(self, name: str = "billing") -> TargetRecord:
        target = await self.store.get_target(name)
        assert target is not None
        return target

    def live(self, name: str = "billing") -> LiveState | None:
        """The dispatcher's view of the target (None until it has read the target)."""
        return self.dispatcher.live_state(name)

    def sample(self, metric: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(metric, labels)
