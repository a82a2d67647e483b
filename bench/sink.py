"""The benchmark's webhook sink: a minimal aiohttp server in its own process.

``bench/run.py`` starts it as a separate process (so it never shares the load
generator's or the gateway's GIL) and registers paths on it as csjd targets:
``POST /hook`` for the end-to-end scenario, ``POST /flaky`` for the outage
scenario. Any ``POST /<name>`` is a webhook path. By default every request is
answered ``200`` at once; ``POST /_mode`` with ``{"path": "/flaky", "status":
500}`` makes that path answer ``500`` from then on (``{"status": 200}``
recovers it) and answers ``{"path", "status", "at"}``, ``at`` being the
``time.time()`` of the switch. Per path, the sink counts every request it gets
(``total``) and those it failed (``failed``, any status other than 2xx), keeps
the ``time.time()`` of the first *successful* arrival per ``webhook-id`` header
(so duplicate deliveries show up as ``total - failed > distinct``), and the
arrival time and status of every request.

``GET /_stats[?path=/hook]`` answers ``{"distinct": n, "total": m, "failed": f,
"status": s}`` for that path (cheap enough to poll); ``times=1`` adds
``"first_at": {webhook_id: unix_seconds}`` and ``requests=1`` adds
``"requests": [[unix_seconds, status], ...]`` in arrival order. ``POST
/_reset`` forgets everything, modes included. It runs on uvloop when that is
installed (as it is with ``uvicorn[standard]``) and stops on SIGTERM or SIGINT.

Usage: ``python bench/sink.py --port 8765 [--host 127.0.0.1]``
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

DEFAULT_PATH = "/hook"


@dataclass
class PathRecord:
    """What one webhook path answers, and what it has received."""

    status: int = 200
    total: int = 0
    failed: int = 0
    first_at: dict[str, float] = field(default_factory=dict)
    requests: list[tuple[float, int]] = field(default_factory=list)


class Recorder:
    """Per path: the mode, first successful arrival per webhook id, every request."""

    def __init__(self) -> None:
        self.paths: dict[str, PathRecord] = {}

    def record(self, path: str) -> PathRecord:
        record = self.paths.get(path)
        if record is None:
            record = self.paths[path] = PathRecord()
        return record

    async def hook(self, request: web.Request) -> web.Response:
        await request.read()
        now = time.time()
        record = self.record(request.path)
        status = record.status
        record.total += 1
        record.requests.append((now, status))
        if not 200 <= status < 300:
            record.failed += 1
            return web.Response(status=status, body=b"failing on purpose")
        webhook_id = request.headers.get("webhook-id", "")
        if webhook_id not in record.first_at:
            record.first_at[webhook_id] = now
        return web.Response(status=status, body=b"ok")

    async def mode(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            path = body.get("path", DEFAULT_PATH)
            status = body["status"]
        except (orjson.JSONDecodeError, AttributeError, KeyError) as exc:
            raise web.HTTPBadRequest(text=f"expected {{path, status}}: {exc!r}") from exc
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("/_"):
            raise web.HTTPBadRequest(text=f"not a webhook path: {path!r}")
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise web.HTTPBadRequest(text=f"not a status to answer with: {status!r}")
        self.record(path).status = status
        answer = {"path": path, "status": status, "at": time.time()}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def stats(self, request: web.Request) -> web.Response:
        record = self.paths.get(request.query.get("path", DEFAULT_PATH)) or PathRecord()
        body: dict[str, Any] = {
            "distinct": len(record.first_at),
            "total": record.total,
            "failed": record.failed,
            "status": record.status,
        }
        if request.query.get("times"):
            body["first_at"] = record.first_at
        if request.query.get("requests"):
            body["requests"] = record.requests
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def reset(self, request: web.Request) -> web.Response:
        self.paths = {}
        return web.Response(status=204)


async def serve(host: str, port: int) -> None:
    recorder = Recorder()
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_get("/_stats", recorder.stats)
    app.router.add_post("/_reset", recorder.reset)
    app.router.add_post("/_mode", recorder.mode)
    app.router.add_post("/{name:[^_/][^/]*}", recorder.hook)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop if it is installed, else on the default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
