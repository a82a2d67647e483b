"""The ceilings csjd is put next to, each measured after csjd has stopped,
never alongside it: the same load generator against the bare FastAPI app
(``bench/bare_app.py``), for intake, and, for delivery, an HTTP client alone
posting to the sink as csjd's sender does: aiohttp, and reqwest (pyreqwest),
csjd's default delivery client. A scenario names the ceilings it
wants and the figure of its own that each one divides; with
``--skip-ceilings`` none is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from pyreqwest.exceptions import PyreqwestError

from app.dispatch.reqwest_sender import client_builder
from bench.harness import BenchError, say
from bench.harness.loadgen import client_session, post_jobs
from bench.harness.procs import BENCH_DIR, HOST, Service, child_env, free_port
from bench.harness.sink_client import sink_reset, sink_stats

BARE_FASTAPI = "bare_fastapi_post_per_s"
OUTBOUND_CLIENT = "outbound_client_per_s"
OUTBOUND_REQWEST = "outbound_reqwest_per_s"
#: a ceiling's name -> (the ratio's name, the figure of the scenario divided by the
#: ceiling: a key of its result, or a dotted path into it, ``accepted_per_s.single``)
CeilingSpec = dict[str, tuple[str, str]]


async def post_outbound(url: str, jobs: int, concurrency: int) -> tuple[float, int]:
    """POST ``jobs`` deliveries to the sink the way csjd's sender does; (wall_s, errors).

    Same session options as ``app.dispatch.sender.AiohttpSender``, the same
    headers as a csjd delivery (unsigned), each request under its own deadline,
    the response body read.
    """
    indexes = iter(range(jobs))
    errors = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for i in indexes:
            headers = _delivery_headers(i)
            try:
                async with asyncio.timeout(30.0):
                    async with session.post(
                        url,
                        data=orjson.dumps({"i": i}),
                        headers=headers,
                        allow_redirects=False,
                    ) as response:
                        await response.content.read(64 * 1024)
                        if response.status != 200:
                            errors += 1
            except (aiohttp.ClientError, OSError, TimeoutError):
                errors += 1

    async with client_session(concurrency) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - t0, errors


def _delivery_headers(i: int) -> dict[str, str]:
    """The headers of a csjd delivery (unsigned)."""
    return {
        "content-type": "application/json",
        "user-agent": "csjd-bench",
        "webhook-id": f"outbound-{i}",
        "webhook-timestamp": str(int(time.time())),
        "idempotency-key": f"outbound-{i}",
        "csjd-attempt": "1",
        "accept-encoding": "identity",
        "accept": "*/*",
    }


async def post_outbound_reqwest(url: str, jobs: int, concurrency: int) -> tuple[float, int]:
    """``post_outbound`` through pyreqwest, with ``ReqwestSender``'s client options."""
    indexes = iter(range(jobs))
    errors = 0
    client = client_builder(concurrency).build()

    async def worker() -> None:
        nonlocal errors
        for i in indexes:
            try:
                async with (
                    client.post(url)
                    .headers(_delivery_headers(i))
                    .body_bytes(orjson.dumps({"i": i}))
                    .timeout(timedelta(seconds=30))
                    .build_streamed() as response
                ):
                    await response.body_reader.read(64 * 1024)
                    if response.status != 200:
                        errors += 1
            except PyreqwestError:
                errors += 1

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0, errors
    finally:
        await client.close()


async def bare_fastapi_ceiling(args: argparse.Namespace, tmp: Path) -> float:
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "bare_app.py"), "--host", HOST, "--port", str(port)]
    say(f"ceiling: bare FastAPI app on port {port}, {args.jobs} POSTs")
    bare = Service.start("bare_app", argv, port=port, tmp=tmp, env=child_env({}))
    try:
        async with client_session(2) as control:
            await bare.wait_ready(control, "/readyz")
        intake = await post_jobs([bare.base_url + "/jobs"], args.jobs, args.concurrency)
    finally:
        await bare.stop()
    if intake.errors:
        raise BenchError(
            f"the bare FastAPI app gave {intake.errors} errors: {intake.error_samples}"
        )
    rate = intake.jobs / intake.wall_s
    say(f"  bare FastAPI: {rate:.0f} POST/s")
    return rate


async def outbound_ceiling(
    args: argparse.Namespace, sink: Service, *, reqwest: bool = False
) -> float:
    client = "reqwest" if reqwest else "aiohttp"
    say(f"ceiling: {client} client alone, {args.jobs} POSTs to the sink")
    post = post_outbound_reqwest if reqwest else post_outbound
    wall_s, errors = await post(sink.base_url + "/hook", args.jobs, args.concurrency)
    async with client_session(2) as control:
        stats = await sink_stats(control, sink)
        await sink_reset(control, sink)
    if errors or stats["distinct"] != args.jobs:
        raise BenchError(
            f"the outbound ceiling run had {errors} errors; the sink saw {stats['distinct']} ids"
        )
    rate = args.jobs / wall_s
    say(f"  outbound {client} client: {rate:.0f} POST/s")
    return rate


async def measure_ceilings(
    args: argparse.Namespace, tmp: Path, sink: Service, result: dict[str, Any], spec: CeilingSpec
) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """The ceilings ``spec`` names, measured now (csjd has stopped), and the ratios to them."""
    if args.skip_ceilings:
        return None, None
    ceilings: dict[str, float] = {}
    ratios: dict[str, float] = {}
    for name, (ratio, figure) in spec.items():
        if name in (OUTBOUND_CLIENT, OUTBOUND_REQWEST):
            async with client_session(2) as control:
                await sink_reset(control, sink)
            value = await outbound_ceiling(args, sink, reqwest=name == OUTBOUND_REQWEST)
        else:
            value = await bare_fastapi_ceiling(args, tmp)
        ceilings[name] = round(value, 1)
        ratios[ratio] = round(_figure(result, figure) / value, 3)
    return ceilings, ratios


def _figure(result: dict[str, Any], path: str) -> float:
    found: Any = result
    for key in path.split("."):
        found = found[key]
    return float(found)
