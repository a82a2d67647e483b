"""Waking the requests that wait on a job (``GET /jobs/{id}`` with ``Prefer: wait=N``).

``JobWatch`` holds one event per waiting request, by job id. The store calls
``changed(ids)`` after every commit that changes jobs (``None`` when it
cannot say which: expiry, rescue, scheduled jobs coming due), so in one
process a waiter wakes as soon as its job moves, with no query of its own.
Where other processes change the same jobs (``--role api`` beside a
dispatcher, Postgres replicas), ``poll`` reads the versions of every watched
job in one query twice a second while anyone waits, and wakes those that
moved: one read per process, never one per waiter. Deciding what to answer
is the route's business.

Waiting is bounded: a request must first take a ``Place``, and there are at
most ``max_waiters`` (``CSJD_MAX_WAITERS``) of them in the process and
``max_per_caller`` for one caller. A request that finds none is answered at
once, as if it had not asked to wait; a place is given back when its request
ends, however it ends (answered, cancelled, its client gone).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

#: how often ``poll`` reads the watched jobs while anyone waits
POLL_INTERVAL_S = 0.5
#: requests that may wait at once, all callers together (``CSJD_MAX_WAITERS``)
MAX_WAITERS = 10_000
#: requests of one caller (one API key's name) that may wait at once
MAX_WAITERS_PER_CALLER = 1000

#: what ``poll`` compares: a job's version as the store reports it
Version = tuple[str, float]
Versions = Callable[[list[str]], Awaitable[Mapping[str, Version]]]


class Waiter:
    """One waiting request: set when its job may have moved past ``version``."""

    __slots__ = ("event", "version")

    def __init__(self, version: Version | None) -> None:
        self.event = asyncio.Event()
        self.version = version


class Place:
    """Leave to wait, held by one request until it ends (``with place: ...``)."""

    __slots__ = ("_caller", "_watch")

    def __init__(self, watch: JobWatch, caller: str) -> None:
        self._watch: JobWatch | None = watch
        self._caller = caller

    def __enter__(self) -> Place:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch._give_back(self._caller)


class JobWatch:
    def __init__(
        self, *, max_waiters: int = MAX_WAITERS, max_per_caller: int = MAX_WAITERS_PER_CALLER
    ) -> None:
        self._waiters: dict[str, set[Waiter]] = {}
        self._someone_waits = asyncio.Event()
        self._closed = False
        self._max_waiters = max_waiters
        self._max_per_caller = max_per_caller
        self._places = 0
        self._places_by_caller: dict[str, int] = {}

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def places_taken(self) -> int:
        """How many requests hold a place to wait now."""
        return self._places

    def place(self, caller: str) -> Place | None:
        """A place to wait for a request of ``caller``, or None if every one is taken."""
        held = self._places_by_caller.get(caller, 0)
        if self._places >= self._max_waiters or held >= self._max_per_caller:
            return None
        self._places += 1
        self._places_by_caller[caller] = held + 1
        return Place(self, caller)

    def _give_back(self, caller: str) -> None:
        self._places -= 1
        left = self._places_by_caller[caller] - 1
        if left:
            self._places_by_caller[caller] = left
        else:
            del self._places_by_caller[caller]

    def waiting(self, job_id: str) -> int:
        """How many requests wait on ``job_id`` now."""
        return len(self._waiters.get(job_id, ()))

    def changed(self, job_ids: Iterable[str] | None) -> None:
        """Wake the waiters of these jobs (of every job if None)."""
        if not self._waiters:
            return
        if job_ids is None:
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.event.set()
            return
        for job_id in job_ids:
            for waiter in self._waiters.get(job_id, ()):
                waiter.event.set()

    @contextlib.contextmanager
    def watching(self, job_id: str) -> Iterator[Waiter]:
        """A waiter for ``job_id``; set its ``version`` to what the request last read."""
        waiter = Waiter(None)
        if self._closed:
            waiter.event.set()
        self._waiters.setdefault(job_id, set()).add(waiter)
        self._someone_waits.set()
        try:
            yield waiter
        finally:
            waiters = self._waiters[job_id]
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[job_id]
            if not self._waiters:
                self._someone_waits.clear()

    def close(self) -> None:
        """Release every waiter now and from now on (the gateway is draining)."""
        self._closed = True
        self.changed(None)

    async def poll(self, versions: Versions, interval_s: float = POLL_INTERVAL_S) -> None:
        """Wake the waiters whose job another process moved; runs until cancelled."""
        while True:
            await self._someone_waits.wait()
            await asyncio.sleep(interval_s)
            watched = list(self._waiters)
            if not watched:
                continue
            now = await versions(watched)
            for job_id in watched:
                for waiter in self._waiters.get(job_id, ()):
                    if waiter.version is not None and waiter.version != now.get(job_id):
                        waiter.event.set()
