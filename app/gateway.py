"""The composition root: ``Gateway.build`` wires everything; ``start``, ``begin_drain``
and ``stop`` are the only places a gateway comes up or goes down.

``build`` makes the store (through ``app/storage/backend.py``, the one way into
storage), the clocks, the sender, the tracing, the dispatcher, maintenance, the
scheduler of schedules, the job watch, the metrics, the supervisor of background
loops, the keyring, the database locks and the waker; it does no I/O. ``start``
takes the locks, migrates (unless a ``csjd serve --workers`` parent did), opens
the store, syncs the database clock, upserts the targets file, rescues attempts
a dead process left running, and only then starts maintenance, the scheduler
(which fires at once what came due while no gateway ran), dispatching and the
listeners. ``begin_drain`` makes it a lame duck
(``/readyz`` and ``POST /jobs`` answer 503, nothing new is claimed), and
``drain_deliveries`` starts the deliveries' drain once the listener closes.
``stop`` drains and closes everything in order and releases the locks. The
ASGI lifespan (``app/main.py``) calls ``start`` and ``stop``, or ``csjd serve``
(``app/serve.py``) does around uvicorn, and calls the drain verbs on a signal. Routes reach the
gateway through ``app/api/deps.py``; nothing here is a module-level global.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from app.config import build_keyring, load_targets_file
from app.core.access import Keyring
from app.core.clock import Clock, SystemClock
from app.dispatch.loop import Dispatcher
from app.dispatch.maintenance import RESCUE_GRACE_S, Maintenance
from app.dispatch.schedules import Scheduler
from app.dispatch.sender import AiohttpSender, Sender
from app.dispatch.wakeup import WakeSender
from app.metrics import Metrics
from app.settings import DeliveryClient, ProcessRole, Settings
from app.storage.backend import Backend, DatabaseClock, Locks
from app.storage.base import JobStore
from app.supervisor import Supervisor
from app.tracing import Tracing, tracing_for
from app.watch import JobWatch

log = logging.getLogger("csjd")


def delivery_sender(settings: Settings) -> Sender:
    """The real sender ``CSJD_DELIVERY_CLIENT`` names, bounded by ``CSJD_MAX_INFLIGHT``.
    pyreqwest is imported only when asked for: it holds about 7 MB once loaded."""
    most, private = settings.max_inflight, settings.allow_private_targets
    if settings.delivery_client is DeliveryClient.REQWEST:
        from app.dispatch.reqwest_sender import ReqwestSender

        return ReqwestSender(max_connections=most, allow_private=private)
    return AiohttpSender(max_connections=most, allow_private=private)


@dataclass(slots=True, kw_only=True)
class Gateway:
    """One gateway process: what the routes reach, and how it comes up and goes down."""

    settings: Settings
    #: ``all``, or one half of a gateway split over two processes on one database
    #: (both serve the API, only the ``dispatcher`` one delivers)
    role: ProcessRole
    store: JobStore
    dispatcher: Dispatcher
    maintenance: Maintenance
    #: fires the schedules, on the maintenance leader
    scheduler: Scheduler
    sender: Sender
    #: spans around intake and deliveries (exported, or none)
    tracing: Tracing
    metrics: Metrics
    clock: Clock
    #: the database's clock, kept in sync while the gateway runs (Postgres only)
    database_clock: DatabaseClock | None
    supervisor: Supervisor
    #: tells whichever process delivers that jobs became due (see ``dispatch/wakeup.py``)
    wake: Callable[[], None]
    #: the API process's half of a split SQLite gateway's wake-ups
    waker: WakeSender | None
    keyring: Keyring
    #: requests waiting on a job (``Prefer: wait``)
    watch: JobWatch
    rng: random.Random
    backend: Backend
    locks: Locks
    #: whether ``start`` migrates (not in a worker: its parent migrated before starting it)
    migrates: bool = True
    draining: bool = False
    started: bool = False

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        sender: Sender | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        role: ProcessRole = ProcessRole.ALL,
        tracing: Tracing | None = None,
        migrates: bool = True,
    ) -> Gateway:
        """Everything wired, nothing started; ``ConfigError`` if the API keys are unusable.
        ``sender``, ``clock``, ``rng`` and ``tracing`` replace the real ones (tests)."""
        rng = rng or random.Random()
        keyring = build_keyring(settings)
        metrics = Metrics()
        watch = JobWatch(max_waiters=settings.max_waiters)
        supervisor = Supervisor()
        backend = Backend(settings, role)
        store = backend.store()
        # replicas on Postgres compare times each other wrote: all use the database's
        database_clock = backend.clock(store) if clock is None else None
        clock = clock or database_clock or SystemClock()
        store.on_change = watch.changed
        sender = sender or delivery_sender(settings)
        tracing = tracing or tracing_for(settings.traces_exported)
        dispatcher = Dispatcher(
            store,
            sender,
            tracing=tracing,
            clock=clock,
            rng=rng.random,
            metrics=metrics,
            max_inflight=settings.max_inflight,
            supervisor=supervisor,
        )
        maintenance = Maintenance(
            store,
            clock=clock,
            rng=rng.random,
            metrics=metrics,
            retention_s=settings.retention_s,
            supervisor=supervisor,
        )
        waker = backend.waker()
        scheduler = Scheduler(
            store,
            clock=clock,
            metrics=metrics,
            wake=waker or dispatcher.wake,
            leading=lambda: maintenance.leading,
            supervisor=supervisor,
        )
        return cls(
            settings=settings,
            role=role,
            store=store,
            dispatcher=dispatcher,
            maintenance=maintenance,
            scheduler=scheduler,
            sender=sender,
            tracing=tracing,
            metrics=metrics,
            clock=clock,
            database_clock=database_clock,
            supervisor=supervisor,
            wake=waker or dispatcher.wake,
            waker=waker,
            keyring=keyring,
            watch=watch,
            rng=rng,
            backend=backend,
            locks=backend.locks(),
            migrates=migrates,
        )

    async def start(self) -> None:
        """Come up, step by step; a step that fails undoes the ones before it and
        raises (nobody calls ``stop`` after a failed start)."""
        self.locks.acquire()
        try:
            if self.migrates:
                await self.backend.migrate()
            await self.store.open()
        except BaseException:
            self.locks.release()
            raise
        try:
            await self._start_work()
        except BaseException:
            await self._close()
            raise
        # (``csjd serve`` logs gateway_started once its listener accepts connections)
        self.started = True

    async def _start_work(self) -> None:
        """What ``start`` does once the store is open."""
        if self.database_clock is not None:
            await self.database_clock.sync()
            self.supervisor.start("clock", self.database_clock.keep_synced)
        if self.settings.targets_file is not None:
            count = await load_targets_file(
                self.settings.targets_file, self.store, self.settings, self.clock.now()
            )
            log.info("targets_loaded", extra={"count": count})
        if self.role.dispatches:
            await self._rescue()
        await self.maintenance.start()
        await self.scheduler.start()
        if self.role.dispatches:
            await self.dispatcher.start()
        listener = self.backend.listener(self.dispatcher.wake)
        if listener is not None:
            self.supervisor.start("listener", listener)
        if self.store.shared:
            # other processes move jobs too: one read wakes this one's waiters
            self.supervisor.start("watch", partial(self.watch.poll, self.store.job_versions))

    async def _rescue(self) -> None:
        # alone on SQLite every leased job is orphaned; on Postgres only leases
        # lapsed past the grace are (other replicas own the rest, and one that
        # just got the database back renews first)
        postgres = self.settings.is_postgres
        rescued = await self.store.rescue(
            self.clock.now(),
            self.rng.random,
            expired_only=postgres,
            grace_s=RESCUE_GRACE_S if postgres else 0.0,
        )
        if rescued:
            log.warning("attempts_rescued", extra={"count": rescued})

    def begin_drain(self) -> None:
        """Become a lame duck: refuse new jobs (503), release the requests waiting
        on jobs, claim nothing new; reads and deliveries under way go on."""
        self.draining = True
        self.watch.close()  # requests waiting on jobs answer now
        self.dispatcher.stop_claiming()

    def drain_deliveries(self) -> None:
        """The listener is closing: the deliveries in flight get the drain timeout
        from now, beside the requests under way; ``stop`` then waits for them."""
        self.dispatcher.begin_stop(self.settings.drain_timeout_s)

    async def stop(self) -> None:
        """Drain (or wait for the drain begun), put back what did not finish, close
        everything and release the locks."""
        await self._close()
        log.info("gateway_stopped")

    async def _close(self) -> None:
        """Every step of ``stop`` but its log line, in order; the locks are released
        even when a step fails."""
        try:
            self.begin_drain()
            await self.dispatcher.stop(self.settings.drain_timeout_s)
            await self.scheduler.stop()
            await self.maintenance.stop()
            await self.supervisor.stop()
            await self.sender.close()
            await self.tracing.close()
            await self.store.close()
            if self.waker is not None:
                self.waker.close()
        finally:
            self.locks.release()
