"""The benchmark's webhook sink: a minimal aiohttp server in its own process.

``bench/run.py`` starts it as a separate process (so it never shares the load
generator's or the gateway's GIL) and registers ``POST /hook`` as a csjd
target. Every request to ``/hook`` is answered ``200`` at once; the sink keeps,
per ``webhook-id`` header, the ``time.time()`` of the first arrival, plus a
total request count (so duplicate deliveries show up as ``total > distinct``).

``GET /_stats`` answers ``{"distinct": n, "total": m}`` (cheap enough to poll);
``GET /_stats?times=1`` adds ``"first_at": {webhook_id: unix_seconds}``.
``POST /_reset`` forgets everything. It runs on uvloop when that is installed
(as it is with ``uvicorn[standard]``) and stops on SIGTERM or SIGINT.

Usage: ``python bench/sink.py --port 8765 [--host 127.0.0.1]``
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Coroutine
from typing import Any

import orjson
from aiohttp import web


class Recorder:
    """First arrival time per webhook id, and the total request count."""

    def __init__(self) -> None:
        self.first_at: dict[str, float] = {}
        self.total = 0

    async def hook(self, request: web.Request) -> web.Response:
        await request.read()
        now = time.time()
        self.total += 1
        webhook_id = request.headers.get("webhook-id", "")
        if webhook_id not in self.first_at:
            self.first_at[webhook_id] = now
        return web.Response(status=200, body=b"ok")

    async def stats(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {"distinct": len(self.first_at), "total": self.total}
        if request.query.get("times"):
            body["first_at"] = self.first_at
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def reset(self, request: web.Request) -> web.Response:
        self.first_at = {}
        self.total = 0
        return web.Response(status=204)


async def serve(host: str, port: int) -> None:
    recorder = Recorder()
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/hook", recorder.hook)
    app.router.add_get("/_stats", recorder.stats)
    app.router.add_post("/_reset", recorder.reset)
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
