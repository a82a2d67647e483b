"""The ``outage`` scenario: target ``flaky`` (the sink's ``/flaky``, up to 20
attempts with backoff), ``--rate`` jobs/s offered for ``--duration`` s while
the sink answers ``500`` on it for ``--outage-s`` s from ``--outage-start`` s
on; once every accepted job has been delivered or has failed, it reports how
many requests the target had to take per job, and how they were spread in
time around the outage and the recovery. One csjd, no ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.harness import BenchError, say
from bench.harness.gateway import fresh_database, put_target, start_csjd
from bench.harness.lines import scenario
from bench.harness.loadgen import (
    PACED_WORKERS,
    client_session,
    offer_paced,
    report_paced,
    sleep_until,
)
from bench.harness.procs import CLEAN_EXITS, POLL_S, Service, sample_proc
from bench.harness.sink_client import sink_mode, sink_reset, sink_stats

#: how often the outage scenario asks csjd for its failed jobs while waiting
FAILED_POLL_S = 2.0
OUTAGE_TARGET = "flaky"
OUTAGE_PATH = "/flaky"
#: the window after recovery that ``max_requests_per_s_after_recovery`` looks at
AFTER_RECOVERY_S = 10.0
#: --rate and --duration when not given, with any --scenario but soak
OUTAGE_RATE, OUTAGE_DURATION_S = 100.0, 60.0


def peak_per_s(times: Sequence[float], start: float, end: float) -> int:
    """The most of ``times`` (sorted) in any 1 s window inside ``[start, end)``."""
    inside = [t for t in times if start <= t < end]
    best = low = 0
    for high, t in enumerate(inside):
        while inside[low] <= t - 1.0:
            low += 1
        best = max(best, high - low + 1)
    return best


async def job_ids_in_state(
    session: aiohttp.ClientSession, gateway: Service, state: str, target: str
) -> set[str]:
    """Every id csjd lists in ``state`` for ``target``, following ``next_cursor``."""
    ids: set[str] = set()
    query = {"state": state, "target": target, "limit": "500"}
    while True:
        async with session.get(gateway.base_url + "/jobs", params=query) as response:
            raw = await response.read()
            if response.status != 200:
                raise BenchError(f"GET /jobs?state={state} answered {response.status}: {raw!r}")
        page = orjson.loads(raw)
        ids.update(str(item["id"]) for item in page["items"])
        if not page.get("next_cursor"):
            return ids
        query["cursor"] = page["next_cursor"]


async def wait_settled(
    session: aiohttp.ClientSession,
    sink: Service,
    gateway: Service,
    *,
    path: str,
    target: str,
    accepted: set[str],
    deadline_s: float,
) -> set[str]:
    """Wait until each accepted id reached the sink with a 2xx or failed in csjd.

    Polls the sink's cheap counts, and csjd's failed jobs every
    ``FAILED_POLL_S``; returns the ids csjd reports failed. Fails after
    ``deadline_s`` with what is still missing.
    """
    started = time.monotonic()
    last_report = last_failed_poll = started
    failed: set[str] = set()
    while True:
        stats = await sink_stats(session, sink, path=path)
        delivered = stats["distinct"]
        if delivered >= len(accepted):
            return failed
        now = time.monotonic()
        if now - last_failed_poll >= FAILED_POLL_S:
            last_failed_poll = now
            failed = await job_ids_in_state(session, gateway, "failed", target)
            if failed and delivered + len(failed) >= len(accepted):
                first_at = (await sink_stats(session, sink, times=True, path=path))["first_at"]
                if not accepted - failed - first_at.keys():
                    return failed
        gateway.check_alive()
        sink.check_alive()
        if now - started > deadline_s:
            raise BenchError(
                f"after {deadline_s:g}s the sink had seen {delivered} of {len(accepted)} "
                f"accepted jobs succeed on {path} and csjd reported {len(failed)} failed; "
                f"csjd's log ends:\n{gateway.log_tail()}"
            )
        if now - last_report > 5:
            say(f"  ... {delivered}/{len(accepted)} delivered, {len(failed)} failed")
            last_report = now
        await asyncio.sleep(POLL_S)


async def outage_schedule(
    session: aiohttp.ClientSession, sink: Service, start: float, args: argparse.Namespace
) -> tuple[float, float]:
    """Fail the outage target from ``--outage-start`` for ``--outage-s``; the switch times."""
    await sleep_until(start + args.outage_start)
    failed_at = await sink_mode(session, sink, OUTAGE_PATH, 500)
    say(f"outage: the sink answers 500 on {OUTAGE_PATH}")
    await sleep_until(start + args.outage_start + args.outage_s)
    recovered_at = await sink_mode(session, sink, OUTAGE_PATH, 200)
    say(f"recovered: the sink answers 200 on {OUTAGE_PATH}")
    return failed_at, recovered_at


async def outage(args: argparse.Namespace, tmp: Path, sink: Service) -> dict[str, Any]:
    async with client_session(2) as control:
        await sink_reset(control, sink)
    async with fresh_database(args, tmp, "outage.db") as database_url:
        gateway = start_csjd(tmp, "csjd_outage", database_url)
        try:
            async with client_session(8) as control:
                await gateway.wait_ready(control, "/readyz")
                target = {
                    "url": f"{sink.base_url}{OUTAGE_PATH}",
                    "max_concurrency": 64,
                    "max_attempts": 20,
                    "backoff_initial_s": 1,
                    "backoff_max_s": 30,
                    "timeout_s": 5,
                }
                await put_target(control, gateway, OUTAGE_TARGET, target)
                at_ready = sample_proc(gateway.proc.pid)

                say(
                    f"offering {args.rate:g} jobs/s for {args.duration:g}s; {OUTAGE_PATH} fails "
                    f"from {args.outage_start:g}s for {args.outage_s:g}s"
                )
                start = time.monotonic()
                offering = asyncio.ensure_future(
                    offer_paced(
                        gateway.base_url + "/jobs",
                        rate=args.rate,
                        duration_s=args.duration,
                        start=start,
                        target=OUTAGE_TARGET,
                        workers=PACED_WORKERS,
                    )
                )
                switching = asyncio.ensure_future(outage_schedule(control, sink, start, args))
                try:
                    intake, (failed_at, recovered_at) = await asyncio.gather(offering, switching)
                finally:
                    offering.cancel()
                    switching.cancel()
                report_paced(intake)
                accepted = {job_id for job_id in intake.ids if job_id is not None}

                await wait_settled(
                    control,
                    sink,
                    gateway,
                    path=OUTAGE_PATH,
                    target=OUTAGE_TARGET,
                    accepted=accepted,
                    deadline_s=args.deadline,
                )
                after = sample_proc(gateway.proc.pid)
                stats = await sink_stats(control, sink, times=True, path=OUTAGE_PATH, requests=True)
                failed_ids = await job_ids_in_state(control, gateway, "failed", OUTAGE_TARGET)
            say(f"every accepted job was delivered or failed ({len(failed_ids)}); stopping csjd")
        finally:
            code = await gateway.stop()
    if code not in CLEAN_EXITS:
        say(f"csjd exited with status {code} on SIGTERM; its log ends:\n{gateway.log_tail()}")

    first_at: dict[str, float] = stats["first_at"]
    missing = accepted - first_at.keys() - failed_ids
    if missing:
        raise BenchError(f"{len(missing)} accepted jobs neither reached the sink nor failed")
    arrivals = sorted(t for t, _status in stats["requests"])
    successes = sorted(first_at[job_id] for job_id in accepted & first_at.keys())
    after_recovery = [t for t in successes if t >= recovered_at]
    resumed = [t for t in arrivals if t >= recovered_at]
    total: int = stats["total"]
    return {
        "offered_jobs": intake.jobs,
        "accepted": len(accepted),
        "errors": intake.errors,
        "rate": args.rate,
        "duration_s": args.duration,
        "outage_start_s": args.outage_start,
        "outage_s": args.outage_s,
        "requests_received": total,
        "amplification": round(total / len(accepted), 3),
        "failed_requests": stats["failed"],
        "jobs_failed": len(failed_ids),
        "drain_after_recovery_s": round(successes[-1] - recovered_at, 3) if successes else None,
        "max_requests_per_s_during_outage": peak_per_s(arrivals, failed_at, recovered_at),
        "max_requests_per_s_after_recovery": peak_per_s(
            arrivals, recovered_at, recovered_at + AFTER_RECOVERY_S
        ),
        "detail": {
            "requests_during_outage": sum(failed_at <= t < recovered_at for t in arrivals),
            "requests_after_recovery": sum(t >= recovered_at for t in arrivals),
            "first_request_after_recovery_s": (
                round(resumed[0] - recovered_at, 3) if resumed else None
            ),
            "max_requests_per_s_since_recovery": peak_per_s(arrivals, recovered_at, math.inf),
            "first_success_after_recovery_s": (
                round(after_recovery[0] - recovered_at, 3) if after_recovery else None
            ),
            "duplicate_deliveries": total - stats["failed"] - stats["distinct"],
            "outage_started_s": round(failed_at - min(intake.send_at), 3),
            "outage_length_s": round(recovered_at - failed_at, 3),
            "max_send_lag_ms": round(intake.max_lag_s * 1000, 1),
            "intake_s": round(intake.wall_s, 3),
            "peak_rss_mb": round(after.peak_rss_mb, 1),
            "cpu_s": round(after.cpu_s - at_ready.cpu_s, 2),
            "csjd_exit_status": code,
        },
    }


SCENARIO = scenario("outage", outage)
