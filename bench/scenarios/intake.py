"""The ``intake`` and ``batch_intake`` scenarios: intake alone, with dispatch
paused. Target ``bench`` is registered disabled, so its jobs stay queued and
nothing is sent; csjd's CPU and RSS are read as the last answer arrives
(``paused_intake``). ``intake`` pushes ``--jobs`` jobs over ``--concurrency``
connections as in ``end_to_end``, next to the bare FastAPI ceiling only:
nothing is delivered. ``batch_intake`` pushes the same ``--jobs`` jobs once
per mode, each mode on a csjd and a database of its own: one ``POST /jobs``
each over ``--concurrency`` connections (``single``), then through ``POST
/jobs/batch``, ``--batch-sizes`` jobs to a request over
``--batch-concurrency`` connections (``batch_<size>``); each batch size's
rate is put next to the single POSTs', and those next to the bare FastAPI
ceiling.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import say
from bench.harness.ceilings import BARE_FASTAPI
from bench.harness.gateway import fresh_database, register_paused, start_csjd
from bench.harness.lines import one_csjd, percentiles, scenario
from bench.harness.loadgen import Intake, client_session, post_batches, post_jobs, report_intake
from bench.harness.procs import ProcSample, Service, report_exit, sample_proc
from bench.harness.sink_client import sink_reset, sink_stats

#: batch_intake: jobs to a ``POST /jobs/batch`` (one measurement each), and the
#: connections sending them
BATCH_SIZES = (100, 1000)
BATCH_CONCURRENCY = 4
#: pushes the jobs at a csjd, given its base URL
Push = Callable[[str], Awaitable[Intake]]


@dataclass
class PausedIntake:
    """One csjd's intake at a disabled target: what the load generator saw, and csjd."""

    intake: Intake
    #: csjd as ``/readyz`` answered, and as the last answer arrived
    at_ready: ProcSample
    after: ProcSample
    #: requests the sink got (0 unless the disabled target sent something)
    sink_requests: int
    code: int

    @property
    def cpu_s(self) -> float:
        return self.after.cpu_s - self.at_ready.cpu_s

    def figures(self, **latencies: Any) -> dict[str, Any]:
        """The rates, then ``latencies`` (named as the scenario reports them), then csjd."""
        intake = self.intake
        return {
            "accepted": intake.accepted,
            "errors": intake.errors,
            "accepted_per_s": round(intake.accepted / intake.wall_s, 1),
            **latencies,
            "peak_rss_mb": round(self.after.peak_rss_mb, 1),
            "cpu_s": round(self.cpu_s, 2),
            "cpu_ms_per_job": round(self.cpu_s * 1000 / intake.accepted, 3),
        }

    def detail(self) -> dict[str, Any]:
        return {
            "intake_s": round(self.intake.wall_s, 3),
            "rss_at_ready_mb": round(self.at_ready.rss_mb, 1),
            "csjd_cpu_s_total": round(self.after.cpu_s, 2),
            # of cpu_ms_per_job, the event loop's (the main thread's)
            "loop_cpu_ms_per_job": round(
                (self.after.loop_cpu_s - self.at_ready.loop_cpu_s) * 1000 / self.intake.accepted,
                3,
            ),
            "loadgen_cpu_s_intake": round(self.intake.cpu_s, 2),
            "sink_requests": self.sink_requests,
            "csjd_exit_status": self.code,
        }


def _singles(args: argparse.Namespace) -> Push:
    """``--jobs`` jobs, one to a ``POST /jobs``, over ``--concurrency`` connections."""
    return lambda base_url: post_jobs(
        [base_url + "/jobs"], args.jobs, args.concurrency, ordering_keys=args.ordering_keys
    )


def _batches(args: argparse.Namespace, size: int) -> Push:
    """``--jobs`` jobs, ``size`` to a ``POST /jobs/batch``, over ``--batch-concurrency``."""
    return lambda base_url: post_batches(
        base_url + "/jobs/batch", args.jobs, size, args.batch_concurrency
    )


async def paused_intake(
    args: argparse.Namespace, tmp: Path, sink: Service, name: str, what: str, push: Push
) -> PausedIntake:
    """A csjd of its own with ``bench`` registered disabled, logging to
    ``<tmp>/csjd_<name>.log``, on ``<tmp>/<name>.db`` (or a fresh Postgres
    database); ``push`` pushes the jobs (``what`` says how)."""
    async with client_session(2) as control:
        await sink_reset(control, sink)
    async with fresh_database(args, tmp, f"{name}.db") as database_url:
        gateway = start_csjd(tmp, f"csjd_{name}", database_url)
        try:
            async with client_session(8) as control:
                await register_paused(control, gateway, sink)
                at_ready = sample_proc(gateway.proc.pid)
                say(f"pushing {args.jobs} jobs {what} (target disabled)")
                intake = await push(gateway.base_url)
                after = sample_proc(gateway.proc.pid)
                report_intake(intake)
                stats = await sink_stats(control, sink)
            say("intake done; stopping csjd")
        finally:
            code = await gateway.stop()
    report_exit(gateway, code)
    if stats["total"]:
        say(f"the sink got {stats['total']} requests from a disabled target")
    return PausedIntake(intake, at_ready, after, stats["total"], code)


async def intake_only(args: argparse.Namespace, tmp: Path, sink: Service) -> dict[str, Any]:
    """Push ``--jobs`` jobs at a disabled target: csjd's intake with dispatch paused."""
    run = await paused_intake(
        args,
        tmp,
        sink,
        "intake",
        f"over {args.concurrency} connections",
        _singles(args),
    )
    post_ms = percentiles(run.intake.post_latencies_ms())
    return {**run.figures(post_latency_ms=post_ms), "detail": run.detail()}


async def batch_intake(args: argparse.Namespace, tmp: Path, sink: Service) -> dict[str, Any]:
    """The same jobs as single POSTs, then ``--batch-sizes`` to a ``POST /jobs/batch``."""
    runs = {
        "single": await paused_intake(
            args,
            tmp,
            sink,
            "batch_single",
            f"one to a POST /jobs over {args.concurrency} connections",
            _singles(args),
        )
    }
    for size in args.batch_sizes:
        runs[f"batch_{size}"] = await paused_intake(
            args,
            tmp,
            sink,
            f"batch_{size}",
            f"{size} to a POST /jobs/batch over {args.batch_concurrency} connections",
            _batches(args, size),
        )
    modes = {
        mode: run.figures(
            requests=len(run.intake.request_ms),
            request_latency_ms=percentiles(run.intake.request_ms),
        )
        for mode, run in runs.items()
    }
    single = modes["single"]["accepted_per_s"]
    return {
        "accepted_per_s": {mode: figures["accepted_per_s"] for mode, figures in modes.items()},
        "cpu_ms_per_job": {mode: figures["cpu_ms_per_job"] for mode, figures in modes.items()},
        "modes": modes,
        "ratios": {
            f"{mode}_vs_single": round(figures["accepted_per_s"] / single, 3)
            for mode, figures in modes.items()
            if mode != "single"
        },
        "detail": {mode: run.detail() for mode, run in runs.items()},
    }


SCENARIO = scenario(
    "intake",
    intake_only,
    lambda args: {
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "ordering_keys": args.ordering_keys,
        **one_csjd(args),
    },
    {BARE_FASTAPI: ("accepted_vs_bare_fastapi", "accepted_per_s")},
)
BATCH = scenario(
    "batch_intake",
    batch_intake,
    lambda args: {
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "batch_sizes": args.batch_sizes,
        "batch_concurrency": args.batch_concurrency,
        **one_csjd(args),
    },
    {BARE_FASTAPI: ("single_vs_bare_fastapi", "accepted_per_s.single")},
)
