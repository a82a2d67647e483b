"""What a route can reach, as ``Annotated`` dependencies.

Every dependency is ``async def``: FastAPI runs plain ``def`` dependencies in
a thread pool, a thread hop per request for nothing.

The ``Gateway`` (``app/gateway.py``) hangs on ``app.state``; routes take it
(and the caller's scope, and the checks that must run before a body is even
parsed) through the aliases below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.api.auth import ANONYMOUS, SCOPE_KEY
from app.core import idempotency, trace
from app.core.access import KeyRole
from app.core.errors import InvalidIdempotencyKey, Unavailable
from app.core.trace import TraceContext
from app.gateway import Gateway


async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def get_caller(request: Request) -> str:
    """The API key's name (``AuthGuard`` checked it), or the anonymous caller."""
    caller: str = request.scope.get(SCOPE_KEY, ANONYMOUS)
    return caller


CallerDep = Annotated[str, Depends(get_caller)]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who asks about jobs: the caller, and whether it is an admin, which sees (and
    cancels and retries) every caller's jobs. With auth off the one anonymous
    caller is an admin. Jobs stay their caller's: an admin's own are under its name."""

    caller: str
    admin: bool

    @property
    def scope(self) -> str | None:
        """Whose jobs it may reach: its own, or None for every caller's."""
        return None if self.admin else self.caller


async def get_viewer(request: Request) -> Viewer:
    caller = await get_caller(request)
    gateway: Gateway = request.app.state.gateway
    keyring = gateway.keyring
    admin = not keyring.enabled or keyring.role(caller) is KeyRole.ADMIN
    return Viewer(caller=caller, admin=admin)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


def ensure_accepting(gateway: Gateway) -> None:
    if gateway.draining or not gateway.started:
        raise Unavailable("the gateway is shutting down; send the job again", retry_after_s=5)


def key_from(values: list[str]) -> str:
    """The request's one ``Idempotency-Key``, from every value it sent."""
    if len(values) > 1:
        raise InvalidIdempotencyKey("send exactly one Idempotency-Key header")
    return idempotency.parse_key(values[0] if values else None)


@dataclass(frozen=True, slots=True)
class Intake:
    """Everything ``POST /jobs`` needs before its body: one dependency, not four
    (FastAPI's per-request cost grows with every dependency node)."""

    gateway: Gateway
    caller: str
    key: str
    #: the request's trace context (``traceparent``, ``tracestate``), if valid
    trace: TraceContext | None


async def intake(request: Request) -> Intake:
    gateway: Gateway = request.app.state.gateway
    ensure_accepting(gateway)
    key = key_from(request.headers.getlist("idempotency-key"))
    context = trace.from_request(
        request.headers.getlist(trace.TRACEPARENT), request.headers.getlist(trace.TRACESTATE)
    )
    return Intake(gateway=gateway, caller=await get_caller(request), key=key, trace=context)


IntakeDep = Annotated[Intake, Depends(intake)]
