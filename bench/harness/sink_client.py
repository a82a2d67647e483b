"""The sink's controls, as the benchmark calls them: its counts and arrival
times (``/_stats``), making a path fail and recover (``/_mode``), forgetting
everything between scenarios (``/_reset``), and waiting until it has seen
every accepted job. The sink itself is ``bench/sink.py``, a process of its
own that ``cli`` starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from bench.harness import BenchError, say
from bench.harness.procs import POLL_S, Service


async def sink_stats(
    session: aiohttp.ClientSession,
    sink: Service,
    times: bool = False,
    *,
    path: str = "/hook",
    requests: bool = False,
) -> dict[str, Any]:
    query = {"path": path}
    if times:
        query["times"] = "1"
    if requests:
        query["requests"] = "1"
    async with session.get(sink.base_url + "/_stats", params=query) as response:
        if response.status != 200:
            raise BenchError(f"the sink answered {response.status} on /_stats")
        stats: dict[str, Any] = orjson.loads(await response.read())
        return stats


async def sink_mode(session: aiohttp.ClientSession, sink: Service, path: str, status: int) -> float:
    """Make the sink answer ``status`` on ``path``; the ``time.time()`` it switched."""
    mode = {"path": path, "status": status}
    async with session.post(sink.base_url + "/_mode", json=mode) as response:
        raw = await response.read()
        if response.status != 200:
            raise BenchError(f"the sink answered {response.status} on /_mode: {raw!r}")
        at: float = orjson.loads(raw)["at"]
        return at


async def sink_reset(session: aiohttp.ClientSession, sink: Service) -> None:
    async with session.post(sink.base_url + "/_reset") as response:
        if response.status != 204:
            raise BenchError(f"the sink answered {response.status} on /_reset")


async def wait_delivered(
    session: aiohttp.ClientSession,
    sink: Service,
    gateways: Sequence[Service],
    expected: int,
    deadline_s: float,
) -> None:
    """Poll the sink until it has seen ``expected`` distinct ids, or fail."""
    started = time.monotonic()
    last_report = started
    while True:
        stats = await sink_stats(session, sink)
        if stats["distinct"] >= expected:
            return
        for gateway in gateways:
            gateway.check_alive()
        sink.check_alive()
        now = time.monotonic()
        if now - started > deadline_s:
            tails = "".join(
                f"\n{gateway.name}'s log ends:\n{gateway.log_tail()}" for gateway in gateways
            )
            raise BenchError(
                f"after {deadline_s:g}s the sink had seen {stats['distinct']} of {expected} "
                f"accepted jobs;{tails}"
            )
        if now - last_report > 5:
            say(f"  ... {stats['distinct']}/{expected} delivered")
            last_report = now
        await asyncio.sleep(POLL_S)
