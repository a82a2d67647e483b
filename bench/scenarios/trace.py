"""The ``trace`` scenario: what trace context costs, both ways. ``end_to_end``'s
measurement (``--jobs`` jobs over ``--concurrency`` connections to target
``bench``, waited for at the sink) in four variants, each on a csjd and a
database of its own: jobs without and with a ``traceparent`` header, with
nothing exported (no ``OTEL_*`` variable) and with spans exported over
OTLP/HTTP to the sink (``OTEL_EXPORTER_OTLP_ENDPOINT``), which answers ``200``
and keeps nothing of them. ``--rounds`` repeats the four in turn, interleaved,
so the machine's drift falls on each alike; the line gives each variant's
medians over the rounds, and each variant's CPU per job and intake rate over
the plain, unexported one's.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from bench.harness import BenchError, say
from bench.harness.gateway import fresh_database, put_target, report_log, start_csjd
from bench.harness.lines import one_csjd, percentiles, scenario
from bench.harness.loadgen import client_session, delivery_latencies, post_jobs, report_intake
from bench.harness.procs import Service, report_exit, sample_proc
from bench.harness.sink_client import sink_reset, sink_stats, wait_delivered

#: (name, whether each job carries a traceparent, whether spans are exported)
VARIANTS = (
    ("plain", False, False),
    ("traced", True, False),
    ("plain_exported", False, True),
    ("traced_exported", True, True),
)
#: where the exporter posts (the sink takes any POST /<path>)
OTLP_PATH = "/v1/traces"


async def one_variant(
    args: argparse.Namespace,
    tmp: Path,
    sink: Service,
    variant: tuple[str, bool, bool],
    round_no: int,
) -> dict[str, Any]:
    """One measured run of one variant, on a database of its own: its figures."""
    name, traced, exported = variant
    async with client_session(2) as control:
        await sink_reset(control, sink)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.base_url} if exported else {}
    run = f"trace_{name}_{round_no}"
    async with fresh_database(args, tmp, f"{run}.db") as database_url:
        gateway = start_csjd(tmp, f"csjd_{run}", database_url, extra_env=env)
        try:
            async with client_session(8) as control:
                await gateway.wait_ready(control, "/readyz")
                target = {"url": f"{sink.base_url}/hook", "max_concurrency": 256}
                await put_target(control, gateway, "bench", target)
                at_ready = sample_proc(gateway.proc.pid)
                say(f"{name}: pushing {args.jobs} jobs over {args.concurrency} connections")
                intake = await post_jobs(
                    [gateway.base_url + "/jobs"], args.jobs, args.concurrency, traced=traced
                )
                report_intake(intake)
                await wait_delivered(control, sink, [gateway], intake.accepted, args.deadline)
                after = sample_proc(gateway.proc.pid)
                stats = await sink_stats(control, sink, times=True)
        finally:
            code = await gateway.stop()
        # the last spans go out as csjd stops
        async with client_session(2) as control:
            exports = (await sink_stats(control, sink, path=OTLP_PATH))["total"]
    report_exit(gateway, code)
    report_log(gateway)
    if exported and not exports:
        raise BenchError(f"{name}: csjd exported no spans to the sink")
    if not exported and exports:
        raise BenchError(f"{name}: csjd exported spans with no OTEL_* variable set")
    latencies = [ms for _sent, ms in delivery_latencies(intake, stats["first_at"])]
    first_send = min(intake.send_at)
    cpu_s = after.cpu_s - at_ready.cpu_s
    return {
        "accepted_per_s": intake.accepted / intake.wall_s,
        "delivered_per_s": intake.accepted / (max(stats["first_at"].values()) - first_send),
        "cpu_ms_per_job": cpu_s * 1000 / intake.accepted,
        "post_latency_ms": percentiles(intake.post_latencies_ms()),
        "enqueue_to_delivery_ms": percentiles(latencies),
        "peak_rss_mb": after.peak_rss_mb,
        "export_requests": exports,
        "errors": intake.errors,
    }


def _median(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> float:
    values = [run[key][sub] if sub else run[key] for run in runs]
    return round(statistics.median(values), 3)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A variant's medians over its rounds."""
    return {
        "accepted_per_s": _median(runs, "accepted_per_s"),
        "delivered_per_s": _median(runs, "delivered_per_s"),
        "cpu_ms_per_job": _median(runs, "cpu_ms_per_job"),
        "post_latency_ms": {p: _median(runs, "post_latency_ms", p) for p in ("p50", "p99")},
        "enqueue_to_delivery_ms": {
            p: _median(runs, "enqueue_to_delivery_ms", p) for p in ("p50", "p99")
        },
        "peak_rss_mb": _median(runs, "peak_rss_mb"),
        "errors": sum(run["errors"] for run in runs),
    }


async def trace_cost(args: argparse.Namespace, tmp: Path, sink: Service) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in VARIANTS}
    for round_no in range(1, args.rounds + 1):
        for variant in VARIANTS:
            name = variant[0]
            say(f"round {round_no} of {args.rounds}: {name}")
            runs[name].append(await one_variant(args, tmp, sink, variant, round_no))
    variants = {name: _summary(results) for name, results in runs.items()}
    base = variants["plain"]
    return {
        "variants": variants,
        "vs_plain": {
            name: {
                "cpu_ms_per_job": round(v["cpu_ms_per_job"] / base["cpu_ms_per_job"], 3),
                "accepted_per_s": round(v["accepted_per_s"] / base["accepted_per_s"], 3),
            }
            for name, v in variants.items()
        },
        "detail": {"runs": runs},
    }


SCENARIO = scenario(
    "trace",
    trace_cost,
    lambda args: {
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        **one_csjd(args),
    },
)
