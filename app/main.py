"""The composition root: ``create_app(settings)`` builds and wires everything.

The lifespan takes the database lock, migrates, opens the store, upserts the
targets file, rescues attempts a dead process left running, and only then
starts dispatching and accepting. On the way out it stops accepting, drains
the dispatcher, and closes the sender and the store.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics
from pydantic import ValidationError

from app import __version__
from app.api import auth, problems
from app.api.deps import Gateway
from app.api.guard import Receive, RequestGuard, Scope, Send
from app.api.intake import PATH as INTAKE_PATH
from app.api.intake import IntakeLane
from app.api.routes import health, jobs, targets, ui
from app.api.schemas import TargetIn
from app.core.access import Keyring, load_keys_file, parse_keys
from app.core.clock import Clock, SystemClock
from app.core.errors import CsjdError
from app.dispatch import wakeup
from app.dispatch.loop import Dispatcher
from app.dispatch.maintenance import RESCUE_GRACE_S, Maintenance
from app.dispatch.sender import AiohttpSender, Sender
from app.metrics import Metrics
from app.net import check_target_url
from app.settings import Role, Settings
from app.storage import postgres
from app.storage.clock import DatabaseClock
from app.storage.factory import build_store
from app.storage.migrate import upgrade_async
from app.storage.sql import SqlJobStore
from app.storage.sqlite import DatabaseLock, sqlite_path
from app.supervisor import Supervisor
from app.watch import JobWatch

log = logging.getLogger("csjd")


class ConfigError(RuntimeError):
    """The configuration cannot work; the message says why."""


class CsjdApp(FastAPI):
    """FastAPI, with ``POST /jobs`` answered by the intake lane before the middleware."""

    intake: IntakeLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.intake is not None
            and scope["type"] == "http"
            and scope["path"] == INTAKE_PATH
            and scope["method"] == "POST"
        ):
            await self.intake(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            auth.document(super().openapi())
        return super().openapi()


def build_keyring(settings: Settings) -> Keyring:
    """The API keys of ``CSJD_API_KEYS`` and ``CSJD_API_KEYS_FILE``; ``ConfigError`` if unusable."""
    try:
        keys = parse_keys(settings.api_keys or "")
        if settings.api_keys_file is not None:
            keys += load_keys_file(settings.api_keys_file)
        keyring = Keyring(keys)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not keyring.enabled and (settings.api_keys is not None or settings.api_keys_file):
        # set but empty (a truncated file, a template left blank): failing open
        # would quietly let everyone in
        raise ConfigError(
            "CSJD_API_KEYS or CSJD_API_KEYS_FILE is set but holds no key; "
            "unset both to run without auth"
        )
    return keyring


async def load_targets_file(path: Path, store: SqlJobStore, settings: Settings, now: float) -> int:
    try:
        data = yaml.safe_load(await asyncio.to_thread(path.read_text))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"CSJD_TARGETS_FILE {path}: cannot read it: {exc}") from None
    if data is None:
        return 0
    if not isinstance(data, list):
        raise ConfigError(f"CSJD_TARGETS_FILE {path}: expected a list of targets")
    from app.api.routes.targets import spec_from

    specs = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"CSJD_TARGETS_FILE {path}: entry {i} needs a 'name'")
        name = item["name"]
        try:
            body = TargetIn.model_validate(item)
            spec = spec_from(name, body)
            if not _valid_name(name):
                raise ConfigError(f"CSJD_TARGETS_FILE {path}: '{name}' is not a valid name")
            await check_target_url(spec.url, allow_private=settings.allow_private_targets)
        except ValidationError as exc:
            # where and why only: pydantic's own text repeats the input, secrets included
            why = "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise ConfigError(f"CSJD_TARGETS_FILE {path}: target '{name}': {why}") from None
        except CsjdError as exc:
            raise ConfigError(f"CSJD_TARGETS_FILE {path}: target '{name}': {exc.detail}") from None
        specs.append(spec)
    for spec in specs:
        await store.put_target(spec, now)
    return len(specs)


def _valid_name(name: str) -> bool:
    import re

    from app.api.schemas import NAME_PATTERN

    return re.match(NAME_PATTERN, name) is not None


def create_app(
    settings: Settings,
    *,
    sender: Sender | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    role: Role = Role.ALL,
) -> CsjdApp:
    """The gateway; ``role`` splits it over two processes on one database (both
    serve the API, only the ``dispatcher`` one delivers), so each gets a core."""
    rng = rng or random.Random()
    keyring = build_keyring(settings)
    metrics = Metrics()
    watch = JobWatch(max_waiters=settings.max_waiters)
    supervisor = Supervisor()
    store = build_store(settings, shared=role is not Role.ALL)
    # replicas on Postgres compare times each other wrote: all use the database's
    database_clock = (
        DatabaseClock(store.database_time) if clock is None and settings.is_postgres else None
    )
    clock = clock or database_clock or SystemClock()
    store.on_change = watch.changed
    sender = sender or AiohttpSender(
        max_connections=settings.max_inflight, allow_private=settings.allow_private_targets
    )
    dispatcher = Dispatcher(
        store,
        sender,
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
    # split over two processes on one SQLite file, the API process wakes the other one
    database_file = sqlite_path(settings.database_url)
    waker = wakeup.WakeSender(database_file) if database_file and role is Role.API else None
    gateway = Gateway(
        settings=settings,
        store=store,
        dispatcher=dispatcher,
        metrics=metrics,
        clock=clock,
        supervisor=supervisor,
        wake=waker or dispatcher.wake,
        keyring=keyring,
        watch=watch,
        rng=rng,
    )
    locks = [DatabaseLock(settings.database_url, duty) for duty in role.duties]

    @asynccontextmanager
    async def lifespan(app: CsjdApp) -> AsyncIterator[None]:
        for lock in locks:
            lock.acquire()
        try:
            await upgrade_async(settings.database_url)
            await store.open()
            try:
                if database_clock is not None:
                    await database_clock.sync()
                    supervisor.start("clock", database_clock.keep_synced)
                if settings.targets_file is not None:
                    count = await load_targets_file(
                        settings.targets_file, store, settings, clock.now()
                    )
                    log.info("targets_loaded", extra={"count": count})
                if role.dispatches:
                    # alone on SQLite every leased job is orphaned; on Postgres
                    # only leases lapsed past the grace are (other replicas own the
                    # rest, and one that just got the database back renews first)
                    rescued = await store.rescue(
                        clock.now(),
                        rng.random,
                        expired_only=settings.is_postgres,
                        grace_s=RESCUE_GRACE_S if settings.is_postgres else 0.0,
                    )
                    if rescued:
                        log.warning("attempts_rescued", extra={"count": rescued})
                await maintenance.start()
                if role.dispatches:
                    await dispatcher.start()
                if settings.is_postgres and role.dispatches:
                    supervisor.start(
                        "listener", partial(postgres.listen, settings.database_url, dispatcher.wake)
                    )
                if database_file and role is Role.DISPATCHER:
                    supervisor.start(
                        "listener", partial(wakeup.listen, database_file, dispatcher.wake)
                    )
                if store.shared:
                    # other processes move jobs too: one read wakes this one's waiters
                    supervisor.start("watch", partial(watch.poll, store.job_versions))
                gateway.started = True
                log.info("gateway_started", extra={"version": __version__, "role": role.value})
                yield
            finally:
                gateway.draining = True
                watch.close()
                await dispatcher.stop(settings.drain_timeout_s)
                await maintenance.stop()
                await supervisor.stop()
                await sender.close()
                await store.close()
                if waker is not None:
                    waker.close()
        finally:
            for lock in locks:
                lock.release()
        log.info("gateway_stopped")

    app = CsjdApp(
        title="csjd",
        version=__version__,
        summary="A production-safe HTTP job gateway",
        description=(
            "POST jobs with an Idempotency-Key; csjd stores them durably and delivers "
            "them to registered webhook targets with bounded, leased, retried dispatch."
        ),
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    problems.install(app)
    app.include_router(jobs.router)
    app.include_router(targets.router)
    app.include_router(health.router)
    app.include_router(ui.router)
    # the last added runs first: HTTP metrics, then API keys, then the body checks
    app.add_middleware(RequestGuard, max_bytes=settings.max_body_bytes)
    app.add_middleware(auth.AuthGuard, keyring=keyring)
    # one recorder of the HTTP metrics, shared by the instrumented routes and the lane
    record_http = http_metrics.default(registry=metrics.registry)
    instrumentator = Instrumentator(registry=metrics.registry, excluded_handlers=["/metrics"])
    if record_http is not None:
        instrumentator.add(record_http)
    instrumentator.instrument(app).expose(app, include_in_schema=False)
    app.intake = IntakeLane(gateway, settings.max_body_bytes, record_http)
    return app
