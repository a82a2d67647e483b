"""What a route can reach, as ``Annotated`` dependencies.

Every dependency is ``async def``: FastAPI runs plain ``def`` dependencies in
a thread pool, a thread hop per request for nothing.

``Gateway`` is the bundle ``create_app`` builds and hangs on ``app.state``;
routes take it (and the caller's scope, and the checks that must run before a
body is even parsed) through the aliases below.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from app.api.auth import ANONYMOUS, SCOPE_KEY
from app.core import idempotency
from app.core.access import Keyring
from app.core.clock import Clock
from app.core.errors import InvalidIdempotencyKey, Unavailable
from app.dispatch.loop import Dispatcher
from app.metrics import Metrics
from app.settings import Settings
from app.storage.base import JobStore
from app.supervisor import Supervisor
from app.watch import JobWatch


@dataclass(slots=True)
class Gateway:
    settings: Settings
    store: JobStore
    dispatcher: Dispatcher
    metrics: Metrics
    clock: Clock
    supervisor: Supervisor
    #: tells whichever process delivers that jobs became due (see ``dispatch/wakeup.py``)
    wake: Callable[[], None]
    keyring: Keyring = field(default_factory=Keyring)
    #: requests waiting on a job (``Prefer: wait``)
    watch: JobWatch = field(default_factory=JobWatch)
    rng: random.Random = field(default_factory=random.Random)
    draining: bool = False
    started: bool = False


async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def get_caller(request: Request) -> str:
    """The API key's name (``AuthGuard`` checked it), or the anonymous caller."""
    caller: str = request.scope.get(SCOPE_KEY, ANONYMOUS)
    return caller


CallerDep = Annotated[str, Depends(get_caller)]


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


async def intake(request: Request) -> Intake:
    gateway: Gateway = request.app.state.gateway
    ensure_accepting(gateway)
    key = key_from(request.headers.getlist("idempotency-key"))
    return Intake(gateway=gateway, caller=await get_caller(request), key=key)


IntakeDep = Annotated[Intake, Depends(intake)]
