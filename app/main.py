"""The ASGI app: ``create_app(settings)`` builds a ``Gateway`` and serves it.

``app_for(gateway)`` puts FastAPI in front of a built gateway: the routers,
the problem handlers, the middleware (HTTP metrics, API keys, body checks)
and the intake lane that answers ``POST /jobs`` ahead of them. Its lifespan
only calls ``gateway.start`` and ``gateway.stop``; what the gateway is made
of, and the order it comes up and goes down in, is ``app/gateway.py``'s.

The API's pages (``/docs``, Swagger UI; ``/redoc``) load their scripts and
styles from csjd itself (``DOCS_ASSETS``, the files the ``fastapi-offline``
package ships), not from a CDN, so they work without internet access; the
auth guard's open paths list those files.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel

from app import __version__
from app.api import auth, problems
from app.api.batch import PATH as BATCH_PATH
from app.api.guard import Receive, RequestGuard, Scope, Send
from app.api.http_metrics import HttpMetrics
from app.api.intake import PATH as INTAKE_PATH
from app.api.intake import IntakeLane
from app.api.routes import health, jobs, schedules, targets, ui, ui_job, ui_jobs
from app.core.clock import Clock
from app.dispatch.sender import Sender
from app.gateway import Gateway
from app.settings import ProcessRole, Settings

#: where the API pages' scripts, styles and icon are served from
DOCS_ASSETS = "/docs/assets"


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
            document = super().openapi()
            auth.document(document)
            _add_bodies(document, jobs.DOCUMENTED_BODIES)
        return super().openapi()


def _add_bodies(document: dict[str, Any], models: tuple[type[BaseModel], ...]) -> None:
    """The schemas of request bodies that routes read themselves, in ``components``."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas[model.__name__] = schema


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
        docs_url=None,  # the pages below, with their assets served here
        redoc_url=None,
    )
    app.state.gateway = gateway
    serve_docs(app)
    problems.install(app)
    app.include_router(jobs.router)
    app.include_router(targets.router)
    app.include_router(schedules.router)
    app.include_router(health.router)
    app.include_router(ui.router)
    app.include_router(ui_jobs.router)
    app.include_router(ui_job.router)  # after the list: /ui/jobs/retry-all is no job id
    # the last added runs first: HTTP metrics, then API keys, then the body checks
    app.add_middleware(
        RequestGuard,
        max_bytes=settings.max_body_bytes,
        limits={BATCH_PATH: settings.max_batch_bytes},
    )
    app.add_middleware(auth.AuthGuard, keyring=gateway.keyring)
    # one recorder of the HTTP metrics, shared by the instrumented routes and the lane
    registry = gateway.metrics.registry
    http_metrics = HttpMetrics(registry)
    instrumentator = Instrumentator(registry=registry, excluded_handlers=["/metrics"])
    instrumentator.add(http_metrics.record)
    instrumentator.instrument(app).expose(app, include_in_schema=False)
    app.intake = IntakeLane(gateway, settings.max_body_bytes, http_metrics)
    return app


def serve_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI), its OAuth2 redirect page and ``/redoc``, every asset
    from ``DOCS_ASSETS`` on this server."""
    app.mount(
        DOCS_ASSETS,
        StaticFiles(directory=str(files("fastapi_offline") / "static")),
        name="docs-assets",
    )
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
