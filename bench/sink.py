"""The benchmark's webhook sink: a lean HTTP/1.1 server in its own process.

The benchmark starts it as a separate process (so it never shares the load
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
/_reset`` forgets everything, modes included. It speaks HTTP through
``http1.py`` (httptools, no framework: the sink's CPU is taken from csjd's),
runs on uvloop when that is installed (as it is with ``uvicorn[standard]``) and
stops on SIGTERM or SIGINT.

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
from urllib.parse import parse_qs, urlsplit

import http1  # bench/ is on sys.path when this runs as a script
import orjson

DEFAULT_PATH = "/hook"
TEXT = "text/plain"
JSON = "application/json"


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

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        parts = urlsplit(target)
        path = parts.path
        if method == "POST" and path.startswith("/") and not path.startswith("/_"):
            return self.hook(path, headers)
        if method == "GET" and path == "/_stats":
            return self.stats(parse_qs(parts.query))
        if method == "POST" and path == "/_mode":
            return self.mode(body)
        if method == "POST" and path == "/_reset":
            self.paths = {}
            return 204, TEXT, b""
        return 404, TEXT, f"no {method} {path}".encode()

    def hook(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        now = time.time()
        record = self.record(path)
        status = record.status
        record.total += 1
        record.requests.append((now, status))
        if not 200 <= status < 300:
            record.failed += 1
            return status, TEXT, b"failing on purpose"
        webhook_id = headers.get("webhook-id", "")
        if webhook_id not in record.first_at:
            record.first_at[webhook_id] = now
        return status, TEXT, b"ok"

    def mode(self, raw: bytes) -> tuple[int, str, bytes]:
        try:
            body = orjson.loads(raw)
            path = body.get("path", DEFAULT_PATH)
            status = body["status"]
        except (orjson.JSONDecodeError, AttributeError, KeyError) as exc:
            return 400, TEXT, f"expected {{path, status}}: {exc!r}".encode()
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("/_"):
            return 400, TEXT, f"not a webhook path: {path!r}".encode()
        if not isinstance(status, int) or not 200 <= status <= 599:
            return 400, TEXT, f"not a status to answer with: {status!r}".encode()
        self.record(path).status = status
        return 200, JSON, orjson.dumps({"path": path, "status": status, "at": time.time()})

    def stats(self, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        record = self.paths.get(query.get("path", [DEFAULT_PATH])[0]) or PathRecord()
        body: dict[str, Any] = {
            "distinct": len(record.first_at),
            "total": record.total,
            "failed": record.failed,
            "status": record.status,
        }
        if query.get("times"):
            body["first_at"] = record.first_at
        if query.get("requests"):
            body["requests"] = record.requests
        return 200, JSON, orjson.dumps(body)


async def serve(host: str, port: int) -> None:
    recorder = Recorder()
    server = await http1.serve(recorder.handle, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()


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
