"""``/healthz`` (the process answers) and ``/readyz`` (it can do its job).

Both answer anyone, without auth, so ``/readyz`` says which check fails and
never why: an exception's text (or its class) can name hosts, users and
drivers, and goes to the log instead.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import GatewayDep
from app.api.problems import documented, problem
from app.api.schemas import Health

log = logging.getLogger("csjd.health")

router = APIRouter(tags=["health"])

PING_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Database reachable, background loops running, not draining",
    responses=documented(503),
)
async def readyz(gateway: GatewayDep) -> Response | Health:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(PING_TIMEOUT_S):
            await gateway.store.ping()
        checks["database"] = "ok"
    except Exception:
        log.warning("readiness_database_unreachable", exc_info=True)
        checks["database"] = "unreachable"
    for loop, status in sorted(gateway.supervisor.status().items()):
        checks[loop] = status
    checks["lifecycle"] = (
        "draining" if gateway.draining else ("ok" if gateway.started else "starting")
    )
    failing = {k: v for k, v in checks.items() if v != "ok"}
    if failing:
        detail = "; ".join(f"{k}: {v}" for k, v in failing.items())
        return problem(
            503, detail=f"not ready ({detail})", retry_after_s=5, extensions={"checks": checks}
        )
    return Health(status="ok", checks=checks)
