"""The ``soak`` scenario (not part of ``all``): ``--rate`` jobs/s (default 350,
half load) offered to a healthy ``bench`` for ``--duration`` s (default 600),
csjd's RSS and the sink's count sampled every 10 s; it reports the RSS drift
from the first minute to the last (goal: within 10 %) and the
enqueue-to-delivery p50 and p99 per minute of send time (goal: a steady p99).
One csjd, no ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import say
from bench.harness.gateway import fresh_database, put_target, report_log, start_csjd
from bench.harness.lines import percentiles, scenario
from bench.harness.loadgen import (
    PACED_WORKERS,
    client_session,
    delivery_latencies,
    offer_paced,
    report_paced,
    sleep_until,
)
from bench.harness.procs import Service, report_exit, sample_proc
from bench.harness.sink_client import sink_reset, sink_stats, wait_delivered

#: --rate and --duration when not given with --scenario soak: half load, for 10 minutes
SOAK_RATE, SOAK_DURATION_S = 350.0, 600.0
#: how often the soak samples csjd's RSS and the sink's count
SOAK_SAMPLE_S = 10.0
#: the soak's goal: RSS over its last minute within this of its first minute (percent)
SOAK_RSS_DRIFT_MAX_PCT = 10.0


@dataclass(frozen=True)
class SoakSample:
    #: seconds into the load
    at_s: float
    #: csjd's ``VmRSS``
    rss_mb: float
    #: distinct jobs the sink has seen
    delivered: int


async def sample_soak(
    control: aiohttp.ClientSession,
    sink: Service,
    gateway: Service,
    start: float,
    duration_s: float,
) -> list[SoakSample]:
    """Every ``SOAK_SAMPLE_S`` from ``start`` (monotonic) to ``duration_s`` after it."""
    samples: list[SoakSample] = []
    k = 1
    while k * SOAK_SAMPLE_S <= duration_s:
        await sleep_until(start + k * SOAK_SAMPLE_S)
        gateway.check_alive()
        rss_mb = sample_proc(gateway.proc.pid).rss_mb
        delivered = (await sink_stats(control, sink))["distinct"]
        samples.append(SoakSample(k * SOAK_SAMPLE_S, rss_mb, delivered))
        if k % 6 == 0:
            say(f"  ... {k * SOAK_SAMPLE_S:g}s: csjd RSS {rss_mb:.1f} MB, {delivered} delivered")
        k += 1
    return samples


def latency_by_minute(
    latencies: list[tuple[float, float]], start_at: float, duration_s: float
) -> list[dict[str, float]]:
    """p50, p99 and max of the latencies per minute of send time from ``start_at``.

    A partial last minute (``duration_s`` not a multiple of 60) is its own bucket;
    a job sent after ``duration_s`` (sent late) counts in the last one.
    """
    minutes = max(1, math.ceil(duration_s / 60))
    buckets: list[list[float]] = [[] for _ in range(minutes)]
    for sent_at, ms in latencies:
        buckets[min(minutes - 1, max(0, int((sent_at - start_at) // 60)))].append(ms)
    return [{"jobs": len(bucket), **percentiles(bucket, (50, 99))} for bucket in buckets]


async def soak(args: argparse.Namespace, tmp: Path, sink: Service) -> dict[str, Any]:
    """Offer ``--rate`` jobs/s to a healthy target for ``--duration``; RSS, latency over time."""
    async with client_session(2) as control:
        await sink_reset(control, sink)
    async with fresh_database(args, tmp, "soak.db") as database_url:
        gateway = start_csjd(tmp, "csjd_soak", database_url)
        try:
            async with client_session(8) as control:
                await gateway.wait_ready(control, "/readyz")
                target = {"url": f"{sink.base_url}/hook", "max_concurrency": 256}
                await put_target(control, gateway, "bench", target)
                at_ready = sample_proc(gateway.proc.pid)
                say(
                    f"offering {args.rate:g} jobs/s for {args.duration:g}s; csjd's RSS sampled "
                    f"every {SOAK_SAMPLE_S:g}s"
                )
                start, start_at = time.monotonic(), time.time()
                offering = asyncio.ensure_future(
                    offer_paced(
                        gateway.base_url + "/jobs",
                        rate=args.rate,
                        duration_s=args.duration,
                        start=start,
                        target="bench",
                        workers=PACED_WORKERS,
                    )
                )
                sampling = asyncio.ensure_future(
                    sample_soak(control, sink, gateway, start, args.duration)
                )
                try:
                    intake, samples = await asyncio.gather(offering, sampling)
                finally:
                    offering.cancel()
                    sampling.cancel()
                report_paced(intake)
                await wait_delivered(control, sink, [gateway], intake.accepted, args.deadline)
                after = sample_proc(gateway.proc.pid)
                stats = await sink_stats(control, sink, times=True)
            say("every accepted job was delivered; stopping csjd")
        finally:
            code = await gateway.stop()
    report_exit(gateway, code)
    log = report_log(gateway)

    first_at: dict[str, float] = stats["first_at"]
    latencies = delivery_latencies(intake, first_at)
    per_minute = latency_by_minute(latencies, start_at, args.duration)
    p99s = [minute["p99"] for minute in per_minute if minute["jobs"]]
    span_s = max(first_at.values()) - min(intake.send_at)
    rss = [sample.rss_mb for sample in samples]
    first_minute = [s.rss_mb for s in samples if s.at_s <= 60]
    last_minute = [s.rss_mb for s in samples if s.at_s > args.duration - 60]
    first_avg = sum(first_minute) / len(first_minute)
    last_avg = sum(last_minute) / len(last_minute)
    drift_pct = (last_avg - first_avg) / first_avg * 100
    cpu_s = after.cpu_s - at_ready.cpu_s
    return {
        "rate": args.rate,
        "duration_s": args.duration,
        "offered_jobs": intake.jobs,
        "accepted": intake.accepted,
        "errors": intake.errors,
        "delivered_per_s": round(intake.accepted / span_s, 1),
        "rss_mb": {
            "first_minute_avg": round(first_avg, 1),
            "last_minute_avg": round(last_avg, 1),
            "min": round(min(rss), 1),
            "max": round(max(rss), 1),
            "drift_pct": round(drift_pct, 1),
        },
        "p99_ms_by_minute": p99s,
        "p50_ms_by_minute": [minute["p50"] for minute in per_minute if minute["jobs"]],
        "p99_ms_spread": round(max(p99s) / min(p99s), 2),
        "enqueue_to_delivery_ms": percentiles([ms for _sent_at, ms in latencies]),
        "post_latency_ms": percentiles(intake.post_latencies_ms()),
        "peak_rss_mb": round(after.peak_rss_mb, 1),
        "cpu_s": round(cpu_s, 2),
        "cpu_ms_per_job": round(cpu_s * 1000 / intake.accepted, 3),
        "targets": {"rss_drift_pct_max": SOAK_RSS_DRIFT_MAX_PCT},
        "within_targets": {"rss": abs(drift_pct) <= SOAK_RSS_DRIFT_MAX_PCT},
        "detail": {
            "latency_ms_by_minute": per_minute,
            "rss_mb_every_10s": [round(r, 1) for r in rss],
            "delivered_every_10s": [sample.delivered for sample in samples],
            "max_send_lag_ms": round(intake.max_lag_s * 1000, 1),
            "intake_s": round(intake.wall_s, 3),
            "rss_at_ready_mb": round(at_ready.rss_mb, 1),
            "csjd_cpu_s_total": round(after.cpu_s, 2),
            "loadgen_cpu_s_intake": round(intake.cpu_s, 2),
            "sink_requests": stats["total"],
            "duplicate_deliveries": stats["total"] - stats["distinct"],
            "warnings_logged": log.warnings,
            "errors_logged": log.errors,
            "csjd_exit_status": code,
        },
    }


SCENARIO = scenario("soak", soak)
