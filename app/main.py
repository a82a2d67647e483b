"""The ASGI app: ``create_app(settings)`` builds a ``Gateway`` and serves it.

``app_for(gateway)`` puts FastAPI in front of a built gateway: the routers,
the problem handlers, the middleware (HTTP metrics, API keys, body checks)
and the intake lane that answers ``POST /jobs`` ahead of them. Its lifespan
only calls ``gateway.start`` and ``gateway.stop``; what the gateway is made
of, and the order it comes up and goes down in, is ``app/gateway.py``'s.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics

from app import __version__
from app.api import auth, problems
from app.api.guard import Receive, RequestGuard, Scope, Send
from app.api.intake import PATH as INTAKE_PATH
from app.api.intake import IntakeLane
from app.api.routes import health, jobs, targets, ui
from app.core.clock import Clock
from app.dispatch.sender import Sender
from app.gateway import Gateway
from app.settings import ProcessRole, Settings


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


def create_app(
    settings: Settings,
    *,
    sender: Sender | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    role: ProcessRole = ProcessRole.ALL,
) -> CsjdApp:
    """The gateway (see ``Gateway.build``) behind its ASGI app."""
    return app_for(Gateway.build(settings, sender=sender, clock=clock, rng=rng, role=role))


def app_for(gateway: Gateway) -> CsjdApp:
    """The ASGI app in front of ``gateway``; its lifespan starts and stops it."""
    settings = gateway.settings

    @asynccontextmanager
    async def lifespan(app: CsjdApp) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

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
    app.add_middleware(auth.AuthGuard, keyring=gateway.keyring)
    # one recorder of the HTTP metrics, shared by the instrumented routes and the lane
    registry = gateway.metrics.registry
    record_http = http_metrics.default(registry=registry)
    instrumentator = Instrumentator(registry=registry, excluded_handlers=["/metrics"])
    if record_http is not None:
        instrumentator.add(record_http)
    instrumentator.instrument(app).expose(app, include_in_schema=False)
    app.intake = IntakeLane(gateway, settings.max_body_bytes, record_http)
    return app
