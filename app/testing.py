"""Test doubles shipped with csjd: a fake clock, a fake sender, a real sink.

``FakeClock`` and ``FakeSender`` sit behind the seams the core and the
dispatcher already take (``Clock``, ``Sender``). ``Sink`` is a real local
HTTP server on a real socket (aiohttp, in its own thread) that records every
delivery and answers as a test scripts it: statuses, ``Retry-After``, delays,
hangs. The end-to-end tests and the benchmark both deliver to it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

from app.core.outcome import FailureKind
from app.dispatch.sender import Failure, Request, Response


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay_s: float = 0.0
    #: never answer (until the client gives up)
    hang: bool = False


class FakeSender:
    """Answers from a script per URL; records every request it was given."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._scripts: dict[str, deque[Reply | Failure]] = {}
        self.default: Reply | Failure = Reply()

    def script(self, url: str, replies: Iterable[Reply | Failure]) -> None:
        self._scripts[url] = deque(replies)

    async def send(self, request: Request) -> Response | Failure:
        self.requests.append(request)
        queue = self._scripts.get(request.url)
        reply = queue.popleft() if queue else self.default
        if isinstance(reply, Failure):
            return reply
        if reply.hang or reply.delay_s >= request.timeout_s:
            await asyncio.sleep(request.timeout_s)
            return Failure(kind=FailureKind.TIMEOUT, message=f"{request.url}: fake timeout")
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return Response(status=reply.status, headers=CIMultiDict(reply.headers), body=reply.body)

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    #: requests to this path in flight when this one arrived, itself included
    concurrency: int = 1
    status: int = 200


def _accepts(task: asyncio.Task[object]) -> bool:
    """Whether ``task`` is the loop's own, accepting a connection."""
    return getattr(task.get_coro(), "__name__", "") == "_accept_connection2"


def _close_transports(loop: asyncio.AbstractEventLoop) -> None:
    """Close the connections still open on ``loop`` before it closes: one accepted
    while the server shut down has no handler to close it, and one whose close was
    begun finishes it only in a later turn of the loop; either would be left for the
    garbage collector to find, unclosed, during some later test."""
    # the selector loop's own registry of its transports (there is no public one)
    transports = getattr(loop, "_transports", {})
    for _ in range(10):
        loop.run_until_complete(asyncio.sleep(0))  # closes already begun finish
        left = [t for t in list(transports.values()) if getattr(t, "_sock", None) is not None]
        if not left:
            return
        for transport in left:
            transport.abort()


class Sink:
    """A real HTTP server that records deliveries; use as a context manager."""

    def __init__(self, *, record_bodies: bool = True) -> None:
        self._record_bodies = record_bodies
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._defaults: dict[str, Reply] = {}
        self._inflight: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0

    # -- scripting ----------------------------------------------------------------

    def answer(self, path: str, reply: Reply) -> None:
        """From now on, answer every request to ``path`` this way."""
        with self._lock:
            self._scripts.pop(path, None)
            self._defaults[path] = reply

    def script(self, path: str, replies: Iterable[Reply], then: Reply | None = None) -> None:
        with self._lock:
            self._scripts[path] = deque(replies)
            if then is not None:
                self._defaults[path] = then

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # -- what was received ----------------------------------------------------------

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if path is None or r.path == path]

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()
            if predicate(got):
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sink saw {len(got)} requests; the condition never held")
            time.sleep(0.01)

    # -- serving ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path
        with self._lock:
            queue = self._scripts.get(path)
            reply = queue.popleft() if queue else self._defaults.get(path, Reply())
            self._inflight[path] = self._inflight.get(path, 0) + 1
            self._received.append(
                Received(
                    path=path,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body if self._record_bodies else b"",
                    at=time.time(),
                    concurrency=self._inflight[path],
                    status=reply.status,
                )
            )
        try:
            if reply.hang:
                await asyncio.sleep(3600)
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            return web.Response(status=reply.status, headers=reply.headers, body=reply.body)
        finally:
            with self._lock:
                self._inflight[path] -= 1

    def __enter__(self) -> Sink:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve(ready))
            # connections accepted as the server shut down: their accepts finish
            # (cancelled, an accept drops its socket open), then they are closed
            accepting = [t for t in asyncio.all_tasks(loop) if _accepts(t)]
            if accepting:
                loop.run_until_complete(asyncio.wait(accepting, timeout=5))
            _close_transports(loop)
            # requests still hanging when the sink stops are cancelled, not abandoned
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            _close_transports(loop)
            loop.close()

        self._thread = threading.Thread(target=run, name="csjd-sink", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the sink did not start")
        return self

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._stop = asyncio.Event()
        ready.set()
        await self._stop.wait()
        await self._runner.cleanup()

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
