"""Running the gateway under uvicorn, with csjd's own start and shutdown sequence.

``serve`` binds the listening socket first (a port already taken is a one-line
``StartFailed``, before anything else starts), then starts the gateway itself
(``Gateway.start``: a database it cannot use is a one-line ``StartFailed`` too),
and only then lets uvicorn accept connections; ``gateway_started`` is logged
once it does, with the address, the database, auth and the ``/ui`` and
``/docs`` addresses (``app/startup.py``). uvicorn's lifespan is off: this
module starts and stops the gateway around uvicorn's ``Server``, which runs
inside csjd's event loop with its signal handling replaced, because a
deploy's ``SIGTERM`` must cost nothing:

1. The first ``SIGTERM``/``SIGINT`` makes the gateway a lame duck at once:
   ``/readyz`` answers 503, ``POST /jobs`` answers 503 with ``Retry-After``,
   reads keep working, and the dispatcher claims nothing new
   (``Gateway.begin_drain``). The ``draining`` line says how many deliveries
   are in flight, how long they may take, and that a second signal forces.
2. After ``CSJD_SHUTDOWN_DELAY_S`` the listener closes. From that moment both
   the requests under way and the deliveries in flight get
   ``CSJD_DRAIN_TIMEOUT_S``, side by side, not one after the other
   (``Gateway.drain_deliveries``); deliveries still running then are put
   back, and ``Gateway.stop`` closes the rest. The exit status is 0.
3. A second signal stops the process at once (``forced_exit``); the leases of
   whatever was in flight bring those jobs back on the next start.

So a stop takes at most ``shutdown_budget_s``: the delay, the drain, and
``SHUTDOWN_MARGIN_S`` for what follows (the claim loop's last claim, the put-back
writes, closing the database). That bound is enforced: a process still running
when it is spent (a database that no longer answers, say) logs
``shutdown_overran`` and exits with status 1, and leases bring its jobs back.

Each worker of ``csjd serve --workers 2`` (``app/workers.py``) runs this same
sequence, on the socket its parent bound (``app/seat.py``); the parent passes
its signals on, so each worker drains its own requests and deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import resource
import signal
import socket
from collections.abc import Callable, Generator

import uvicorn

from app.api.http_limits import LimitedHttpToolsProtocol
from app.config import ConfigError
from app.gateway import Gateway
from app.main import CsjdApp, app_for
from app.seat import Seat
from app.settings import ProcessRole, Settings
from app.startup import (
    INVALID_CONFIGURATION,
    StartFailed,
    database_failure,
    listen,
    open_sqlite_file,
    started_fields,
)

log = logging.getLogger("csjd")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GatewayServer(uvicorn.Server):
    """uvicorn's server without its own signal handlers (csjd installs its own),
    calling ``on_started`` once it accepts connections."""

    on_started: Callable[[], None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()


#: The garbage collector's thresholds in a serving process. Python's defaults
#: (700, 10, 10) ran a full collection every few seconds under load, and the
#: collector took about a quarter of the process's CPU in the benchmark's drain;
#: young objects here are mostly short-lived, and cycles are rare.
GC_THRESHOLDS = (10_000, 20, 20)


def tune_gc() -> None:
    """Leave what start-up built out of every later collection, and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


#: after the lame duck and the drain, what the stop may still take: the claim
#: loop's last claim, the writes that put interrupted jobs back, closing
SHUTDOWN_MARGIN_S = 5.0
#: the exit status of a stop that overran its budget
OVERRAN_EXIT = 1


def shutdown_budget_s(settings: Settings) -> float:
    """The longest a gateway runs after its first ``SIGTERM``/``SIGINT``."""
    return settings.shutdown_delay_s + settings.drain_timeout_s + SHUTDOWN_MARGIN_S


def enforce_budget(budget_s: float) -> asyncio.TimerHandle:
    """Exit the process if it is still running ``budget_s`` from now."""

    def overran() -> None:
        log.error("shutdown_overran", extra={"budget_s": budget_s})
        logging.shutdown()
        os._exit(OVERRAN_EXIT)

    return asyncio.get_running_loop().call_later(budget_s, overran)


#: connections the kernel queues before csjd accepts them (the limit on
#: connections is applied after accepting, by ``CSJD_MAX_CONNECTIONS``)
LISTEN_BACKLOG = 2048
#: file descriptors beyond the connections: database, log, outgoing deliveries' spare
FD_RESERVE = 256


def server_config(
    app: CsjdApp, settings: Settings, host: str, port: int, *, lifespan: bool = True
) -> uvicorn.Config:
    """uvicorn's configuration for the gateway, its limits taken from ``settings``;
    without ``lifespan``, the caller starts and stops the gateway itself."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on" if lifespan else "off",
        # httptools, with limits on headers and on slow clients (431, 408) and
        # the connection limit answered as problem+json (503)
        http=LimitedHttpToolsProtocol,
        limit_concurrency=settings.max_connections,
        backlog=LISTEN_BACKLOG,
        # requests under way get the drain once the listener closes, while the
        # deliveries get theirs (at least a second, and uvicorn counts whole ones)
        timeout_graceful_shutdown=max(1, math.ceil(settings.drain_timeout_s)),
    )


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (never past
    the hard limit); the soft limit now. A connection limit above it would be
    met by failed accepts instead of 503s."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


async def serve(
    settings: Settings,
    host: str,
    port: int,
    role: ProcessRole = ProcessRole.ALL,
    seat: Seat | None = None,
) -> int:
    """Run the gateway until a signal stops it; ``StartFailed`` when it cannot start.
    A worker of ``csjd serve --workers`` (``seat``) serves on the socket its parent
    bound, does not migrate, and tells the parent once it accepts connections."""
    listener = listen(host, port) if seat is None else seat.listener()
    try:
        return await _serve(settings, listener, role, seat)
    finally:
        listener.close()


async def _serve(
    settings: Settings, listener: socket.socket, role: ProcessRole, seat: Seat | None
) -> int:
    gateway = Gateway.build(settings, role=role, migrates=seat is None)
    app = app_for(gateway)
    tune_gc()
    wanted = settings.max_connections + settings.max_inflight + FD_RESERVE
    if (files := raise_fd_limit(wanted)) < wanted:
        log.warning(
            "open_files_limit_low",
            extra={"limit": files, "wanted": wanted, "max_connections": settings.max_connections},
        )
    host, port = listener.getsockname()[:2]
    server = GatewayServer(server_config(app, settings, host, port, lifespan=False))

    def started() -> None:
        log.info("gateway_started", extra=started_fields(gateway, listener))
        if seat is not None:
            seat.ready()

    server.on_started = started
    loop = asyncio.get_running_loop()
    lame_duck: asyncio.Task[None] | None = None

    async def retire() -> None:
        await asyncio.sleep(settings.shutdown_delay_s)
        log.info("listener_closing")
        server.should_exit = True
        # the deliveries' drain runs beside uvicorn's wait for requests under
        # way; the gateway's stop then waits for this one
        gateway.drain_deliveries()

    def on_signal(sig: signal.Signals) -> None:
        nonlocal lame_duck
        if lame_duck is not None:
            log.warning(
                "forced_exit",
                extra={
                    "signal": sig.name,
                    "deliveries_in_flight": gateway.dispatcher.inflight,
                    "detail": "stopping now; the deliveries cut off are sent again "
                    "once their leases lapse (on SQLite, at the next start)",
                },
            )
            logging.shutdown()
            os._exit(128 + sig.value)
        budget_s = shutdown_budget_s(settings)
        inflight = gateway.dispatcher.inflight
        log.info(
            "draining",
            extra={
                "signal": sig.name,
                "deliveries_in_flight": inflight,
                "shutdown_delay_s": settings.shutdown_delay_s,
                "drain_timeout_s": settings.drain_timeout_s,
                "exit_within_s": budget_s,
                "detail": _stopping(sig, inflight, settings),
            },
        )
        enforce_budget(budget_s)
        gateway.begin_drain()
        lame_duck = asyncio.create_task(retire(), name="csjd-lame-duck")

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await _start(gateway)
        try:
            await server.serve(sockets=[listener])
        finally:
            await gateway.stop()
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
        if lame_duck is not None and not lame_duck.done():
            lame_duck.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lame_duck
    return 0 if server.started else 1


def _stopping(sig: signal.Signals, inflight: int, settings: Settings) -> str:
    """What a person who pressed Ctrl-C reads: what the stop waits for, and how to force it."""
    again = "Ctrl-C" if sig is signal.SIGINT else sig.name
    if inflight == 0:
        waiting = "no deliveries in flight"
    else:
        wait_s = settings.shutdown_delay_s + settings.drain_timeout_s
        plural = "delivery" if inflight == 1 else "deliveries"
        waiting = f"waiting for {inflight} {plural} in flight (up to {wait_s:g} s)"
    return f"stopping, {waiting}; {again} again to stop at once"


async def _start(gateway: Gateway) -> None:
    """``Gateway.start``, its failures a person can fix turned into ``StartFailed``."""
    try:
        open_sqlite_file(gateway.settings)
        await gateway.start()
    except ConfigError as exc:
        raise StartFailed(f"invalid configuration: {exc}", INVALID_CONFIGURATION) from None
    except Exception as exc:
        if (failure := database_failure(exc, gateway.settings)) is None:
            raise
        raise failure from None


def run(
    settings: Settings,
    host: str,
    port: int,
    role: ProcessRole = ProcessRole.ALL,
    seat: Seat | None = None,
) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(serve(settings, host, port, role, seat))
    return uvloop.run(serve(settings, host, port, role, seat))
