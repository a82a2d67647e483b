"""The ``drain`` scenario: target ``bench`` registered disabled, ``--backlog``
jobs queued at it, then enabled, and csjd timed delivering the whole backlog
with nothing else competing, next to the outbound client ceiling.
``queue_then_drain``, the measurement itself, is ``big_backlog``'s too.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import BenchError, say
from bench.harness.ceilings import OUTBOUND_CLIENT, OUTBOUND_REQWEST
from bench.harness.gateway import fresh_database, put_target, register_paused, start_csjd
from bench.harness.lines import one_csjd, scenario
from bench.harness.loadgen import Intake, client_session, post_jobs, report_intake
from bench.harness.procs import ProcSample, Service, report_exit, sample_proc
from bench.harness.sink_client import sink_reset, sink_stats, wait_delivered


@dataclass
class Drained:
    """A batch queued at the disabled target ``bench``, then delivered once it was enabled."""

    intake: Intake
    #: how long the enabling ``PUT`` took to answer
    enable_put_s: float
    #: from just before the enabling ``PUT`` to the first, and to the last, first
    #: arrival of an accepted job at the sink
    first_delivery_s: float
    drain_s: float
    #: csjd as the intake started, just before the enabling ``PUT``, and once every
    #: accepted job arrived
    start: ProcSample
    before: ProcSample
    after: ProcSample
    #: the sink's ``/_stats`` of ``/hook`` at the end
    stats: dict[str, Any]

    @property
    def intake_per_s(self) -> float:
        return self.intake.accepted / self.intake.wall_s

    @property
    def drained_per_s(self) -> float:
        return self.intake.accepted / self.drain_s


async def queue_then_drain(
    control: aiohttp.ClientSession,
    gateway: Service,
    sink: Service,
    target: dict[str, Any],
    *,
    jobs: int,
    concurrency: int,
    deadline_s: float,
    key_prefix: str = "bench",
) -> Drained:
    """Queue ``jobs`` jobs at the disabled ``bench``, enable it, wait until all arrived.

    ``target`` is the body ``bench`` was registered with, disabled (see
    ``register_paused``); the sink must have seen nothing on ``/hook`` by the
    end of the intake (else the run fails) and must see every accepted job
    within ``deadline_s`` of the enabling ``PUT``.
    """
    start = sample_proc(gateway.proc.pid)
    intake = await post_jobs([gateway.base_url + "/jobs"], jobs, concurrency, key_prefix=key_prefix)
    report_intake(intake)
    early = await sink_stats(control, sink)
    if early["total"]:
        raise BenchError(f"the sink got {early['total']} requests while the target was disabled")
    before = sample_proc(gateway.proc.pid)
    say("enabling the target; draining")
    enabled_at = time.time()
    await put_target(control, gateway, "bench", {**target, "enabled": True})
    enable_put_s = time.time() - enabled_at
    await wait_delivered(control, sink, [gateway], intake.accepted, deadline_s)
    after = sample_proc(gateway.proc.pid)
    stats = await sink_stats(control, sink, times=True)
    first_at: dict[str, float] = stats["first_at"]
    accepted = {job_id for job_id in intake.ids if job_id is not None}
    missing = accepted - first_at.keys()
    if missing:
        raise BenchError(f"{len(missing)} accepted job ids never reached the sink")
    arrivals = [first_at[job_id] for job_id in accepted]
    return Drained(
        intake=intake,
        enable_put_s=enable_put_s,
        first_delivery_s=min(arrivals) - enabled_at,
        drain_s=max(arrivals) - enabled_at,
        start=start,
        before=before,
        after=after,
        stats=stats,
    )


async def drain(args: argparse.Namespace, tmp: Path, sink: Service) -> dict[str, Any]:
    """Queue ``--backlog`` jobs at a disabled target, enable it, time the sink seeing them all."""
    async with client_session(2) as control:
        await sink_reset(control, sink)
    async with fresh_database(args, tmp, "drain.db") as database_url:
        gateway = start_csjd(tmp, "csjd_drain", database_url)
        try:
            async with client_session(8) as control:
                target = await register_paused(control, gateway, sink)
                at_ready = sample_proc(gateway.proc.pid)
                say(
                    f"queueing a backlog of {args.backlog} jobs over {args.concurrency} "
                    "connections (target disabled)"
                )
                drained = await queue_then_drain(
                    control,
                    gateway,
                    sink,
                    target,
                    jobs=args.backlog,
                    concurrency=args.concurrency,
                    deadline_s=args.deadline,
                )
            say("every accepted job was delivered; stopping csjd")
        finally:
            code = await gateway.stop()
    report_exit(gateway, code)

    intake, before, after, stats = drained.intake, drained.before, drained.after, drained.stats
    cpu_s = after.cpu_s - before.cpu_s
    return {
        "backlog": args.backlog,
        "accepted": intake.accepted,
        "errors": intake.errors,
        "drain_s": round(drained.drain_s, 3),
        "drained_per_s": round(drained.drained_per_s, 1),
        "peak_rss_mb": round(after.peak_rss_mb, 1),
        "cpu_s": round(cpu_s, 2),
        "cpu_ms_per_job": round(cpu_s * 1000 / intake.accepted, 3),
        "detail": {
            "backlog_intake_s": round(intake.wall_s, 3),
            "backlog_accepted_per_s": round(drained.intake_per_s, 1),
            "first_delivery_after_enable_s": round(drained.first_delivery_s, 3),
            "peak_rss_mb_before_drain": round(before.peak_rss_mb, 1),
            "rss_at_ready_mb": round(at_ready.rss_mb, 1),
            "csjd_cpu_s_intake": round(before.cpu_s - at_ready.cpu_s, 2),
            "csjd_cpu_s_total": round(after.cpu_s, 2),
            # of cpu_ms_per_job, the event loop's (the main thread's)
            "loop_cpu_ms_per_job": round(
                (after.loop_cpu_s - before.loop_cpu_s) * 1000 / intake.accepted, 3
            ),
            "sink_requests": stats["total"],
            "duplicate_deliveries": stats["total"] - stats["distinct"],
            "csjd_exit_status": code,
        },
    }


SCENARIO = scenario(
    "drain",
    drain,
    lambda args: {"concurrency": args.concurrency, **one_csjd(args)},
    {
        OUTBOUND_CLIENT: ("drained_vs_outbound_client", "drained_per_s"),
        OUTBOUND_REQWEST: ("drained_vs_outbound_reqwest", "drained_per_s"),
    },
)
