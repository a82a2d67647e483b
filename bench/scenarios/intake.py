"""The ``intake`` scenario: intake alone, with dispatch paused. Target
``bench`` is registered disabled, so its jobs stay queued and nothing is
sent, and ``--jobs`` jobs are pushed over ``--concurrency`` connections as in
``end_to_end``; csjd's CPU and RSS are read as the last answer arrives. Next
to the bare FastAPI ceiling only: nothing is delivered.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.harness import say
from bench.harness.ceilings import BARE_FASTAPI
from bench.harness.gateway import fresh_database, register_paused, start_csjd
from bench.harness.lines import one_csjd, percentiles, scenario
from bench.harness.loadgen import client_session, post_jobs, report_intake
from bench.harness.procs import Service, report_exit, sample_proc
from bench.harness.sink_client import sink_reset, sink_stats


async def intake_only(args: argparse.Namespace, tmp: Path, sink: Service) -> dict[str, Any]:
    """Push ``--jobs`` jobs at a disabled target: csjd's intake with dispatch paused."""
    async with client_session(2) as control:
        await sink_reset(control, sink)
    async with fresh_database(args, tmp, "intake.db") as database_url:
        gateway = start_csjd(tmp, "csjd_intake", database_url)
        try:
            async with client_session(8) as control:
                await register_paused(control, gateway, sink)
                at_ready = sample_proc(gateway.proc.pid)
                say(
                    f"pushing {args.jobs} jobs over {args.concurrency} connections "
                    "(target disabled)"
                )
                intake = await post_jobs([gateway.base_url + "/jobs"], args.jobs, args.concurrency)
                after = sample_proc(gateway.proc.pid)
                report_intake(intake)
                stats = await sink_stats(control, sink)
            say("intake done; stopping csjd")
        finally:
            code = await gateway.stop()
    report_exit(gateway, code)
    if stats["total"]:
        say(f"the sink got {stats['total']} requests from a disabled target")
    post_ms = intake.post_latencies_ms()
    cpu_s = after.cpu_s - at_ready.cpu_s
    return {
        "accepted": intake.accepted,
        "errors": intake.errors,
        "accepted_per_s": round(intake.accepted / intake.wall_s, 1),
        "post_latency_ms": percentiles(post_ms),
        "peak_rss_mb": round(after.peak_rss_mb, 1),
        "cpu_s": round(cpu_s, 2),
        "cpu_ms_per_job": round(cpu_s * 1000 / intake.accepted, 3),
        "detail": {
            "intake_s": round(intake.wall_s, 3),
            "rss_at_ready_mb": round(at_ready.rss_mb, 1),
            "csjd_cpu_s_total": round(after.cpu_s, 2),
            "loadgen_cpu_s_intake": round(intake.cpu_s, 2),
            "sink_requests": stats["total"],
            "csjd_exit_status": code,
        },
    }


SCENARIO = scenario(
    "intake",
    intake_only,
    lambda args: {"jobs": args.jobs, "concurrency": args.concurrency, **one_csjd(args)},
    {BARE_FASTAPI: ("accepted_vs_bare_fastapi", "accepted_per_s")},
)
