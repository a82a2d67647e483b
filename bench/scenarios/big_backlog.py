"""The ``big_backlog`` and ``big_backlog_scheduled`` scenarios (SQLite, or
Postgres with ``--db postgres``): does a deep backlog cost anything? Phase A,
on a fresh database: ``bench`` and
``parked`` are registered, ``--jobs`` jobs are queued at the disabled
``bench`` (the intake rate), then ``bench`` is enabled and drained (the claim
rate), as in ``drain``. With csjd stopped, ``--big-backlog`` jobs for
``parked`` are inserted straight into the database (the app's own table on
SQLite, ``COPY`` on Postgres):
queued at a disabled ``parked`` (``big_backlog``), or scheduled 1 to 20 days
ahead at an enabled one (``big_backlog_scheduled``, where the dispatcher and
maintenance run their statements over jobs that are not due). Phase B: csjd
starts again on that database and the same measurement runs with new idempotency
keys, ``parked`` keeping all of its jobs waiting. Goals: RSS under 150 MB,
both rates within 20 % of phase A's. No ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from sqlalchemy import create_engine, insert

from app.core.ids import uuid7
from app.storage.models import jobs as jobs_table
from bench.harness import BenchError, say
from bench.harness.gateway import (
    LogSummary,
    fresh_database,
    put_target,
    register_paused,
    report_log,
    seed_counts,
    start_csjd,
)
from bench.harness.lines import percentiles, scenario
from bench.harness.loadgen import client_session
from bench.harness.procs import ProcSample, Service, report_exit, sample_proc
from bench.harness.sink_client import sink_reset, sink_stats
from bench.scenarios.drain import Drained, queue_then_drain

#: big_backlog: the target holding the seeded backlog (disabled when it is queued), on its own
#: sink path
PARKED_TARGET = "parked"
PARKED_PATH = "/parked"
#: big_backlog: rows per seeding transaction, and how long the seeded jobs stay unexpired
SEED_CHUNK = 50_000
PARKED_TTL_S = 30 * 86400.0
#: big_backlog_scheduled: the seeded jobs are due this many days from now, spread evenly
SCHEDULED_DAYS = (1.0, 20.0)
#: big_backlog's goals: csjd's peak RSS, and the full-to-empty rate ratios
BIG_BACKLOG_RSS_MAX_MB = 150.0
BIG_BACKLOG_RATIO_MIN = 0.8


@dataclass(frozen=True)
class Parked:
    """How the jobs ``big_backlog`` seeds at ``PARKED_TARGET`` wait there."""

    #: ``queued`` (due, held by a disabled target) or ``scheduled`` (not due yet)
    state: str
    #: whether ``PARKED_TARGET`` is registered enabled
    enabled: bool

    def next_attempt_at(self, created_at: float, i: int, n: int, now: float) -> float:
        if self.state == "queued":
            return created_at
        first, last = SCHEDULED_DAYS
        return now + 86400.0 * (first + (last - first) * i / max(1, n - 1))


#: big_backlog: a deep queue at a disabled target
PARKED_QUEUED = Parked(state="queued", enabled=False)
#: big_backlog_scheduled: a deep schedule at an enabled target, none of it due
PARKED_SCHEDULED = Parked(state="scheduled", enabled=True)


def parked_rows(n: int, parked: Parked, low: int, high: int, now: float) -> list[dict[str, Any]]:
    """Rows ``low`` to ``high`` of the ``n`` jobs ``seed_parked`` inserts at ``now``.

    They are what ``SqlJobStore`` stores for a job it accepts as queued or
    scheduled (``records.job_row``): caller ``""`` (no API keys),
    ``Idempotency-Key: parked-<i>``, payload ``{"i":<i>}``, one job per
    millisecond ending an hour ago (uuid7 ids of those milliseconds, so they
    sort before anything csjd accepts later), expiring in ``PARKED_TTL_S``;
    due when created (queued) or as ``Parked.next_attempt_at`` says
    (scheduled).
    """
    first_ms = int(now * 1000) - n - 3_600_000
    rows = []
    for i in range(low, high):
        ms = first_ms + i
        payload = b'{"i":%d}' % i
        rows.append(
            {
                "id": uuid7(ms),
                "caller": "",
                "idempotency_key": f"parked-{i}",
                "fingerprint": hashlib.sha256(payload).hexdigest(),
                "target": PARKED_TARGET,
                "payload": payload,
                "headers": None,
                "state": parked.state,
                "attempts": 0,
                "deliveries": 0,
                "max_attempts": 10,
                "created_at": ms / 1000,
                "updated_at": ms / 1000,
                "next_attempt_at": parked.next_attempt_at(ms / 1000, i, n, now),
                "expires_at": now + PARKED_TTL_S,
            }
        )
    return rows


def seed_parked(path: Path, n: int, parked: Parked) -> float:
    """Insert ``n`` jobs for ``PARKED_TARGET`` (``parked_rows``) straight into the
    SQLite file ``path``, through the app's own table.

    csjd must be stopped, and the target registered. ``SEED_CHUNK`` rows per
    transaction; then the target's backlog count, as csjd's writes keep it,
    and the WAL is checkpointed, so that the next csjd starts on a settled
    file. Answers the file's size in MB.
    """
    now = time.time()
    engine = create_engine(f"sqlite:///{path}")
    try:
        for low in range(0, n, SEED_CHUNK):
            rows = parked_rows(n, parked, low, min(n, low + SEED_CHUNK), now)
            with engine.begin() as conn:
                conn.execute(insert(jobs_table), rows)
            if (low // SEED_CHUNK) % 5 == 4:
                say(f"  ... {low + len(rows)}/{n} rows")
        # the jobs were accepted more than the hour of minutes csjd keeps ago
        seed_counts(engine, {(PARKED_TARGET, parked.state): n})
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    return path.stat().st_size / 2**20


async def seed_parked_postgres(database_url: str, n: int, parked: Parked) -> float:
    """``seed_parked`` on Postgres: ``COPY`` of ``SEED_CHUNK`` rows per
    transaction, the target's backlog count, then ``VACUUM ANALYZE`` of the jobs
    (what autovacuum would have done by the time a million jobs had come in).
    Answers the database's size in MB."""
    now = time.time()
    columns = list(parked_rows(1, parked, 0, 1, now)[0])
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        for low in range(0, n, SEED_CHUNK):
            rows = parked_rows(n, parked, low, min(n, low + SEED_CHUNK), now)
            async with conn.transaction():
                await conn.copy_records_to_table(
                    jobs_table.name, records=[tuple(r.values()) for r in rows], columns=columns
                )
            if (low // SEED_CHUNK) % 5 == 4:
                say(f"  ... {low + len(rows)}/{n} rows")
        await conn.execute(
            "INSERT INTO target_backlog (target, state, count) VALUES ($1, $2, $3) "
            "ON CONFLICT (target, state) DO UPDATE SET count = target_backlog.count + $3",
            PARKED_TARGET,
            parked.state,
            n,
        )
        await conn.execute(f"VACUUM ANALYZE {jobs_table.name}")
        size: int = await conn.fetchval("SELECT pg_database_size(current_database())")
        return size / 2**20
    finally:
        await conn.close()


async def target_backlog(
    session: aiohttp.ClientSession, gateway: Service, name: str
) -> dict[str, int]:
    """A target's unfinished jobs by state: ``state.backlog`` of ``GET /targets/<name>``."""
    async with session.get(gateway.base_url + f"/targets/{name}") as response:
        raw = await response.read()
        if response.status != 200:
            raise BenchError(f"GET /targets/{name} answered {response.status}: {raw!r}")
    backlog: dict[str, int] = orjson.loads(raw)["state"]["backlog"]
    return backlog


@dataclass
class BacklogPhase:
    """One csjd of ``big_backlog``: its start, then a batch queued and drained."""

    drained: Drained
    #: from starting the process to ``/readyz`` answering 200
    ready_s: float
    at_ready: ProcSample
    #: how long ``GET /targets/parked`` took at the start (it counts the backlog)
    get_target_s: float
    log: LogSummary
    code: int

    def figures(self) -> dict[str, float]:
        d = self.drained
        return {
            "intake_per_s": round(d.intake_per_s, 1),
            "claim_per_s": round(d.drained_per_s, 1),
            "rss_at_ready_mb": round(self.at_ready.rss_mb, 1),
            "peak_rss_mb": round(d.after.peak_rss_mb, 1),
        }

    def detail(self) -> dict[str, Any]:
        d = self.drained
        accepted = d.intake.accepted
        return {
            "accepted": accepted,
            "errors": d.intake.errors,
            "ready_s": round(self.ready_s, 2),
            "get_target_s": round(self.get_target_s, 3),
            "intake_s": round(d.intake.wall_s, 3),
            "post_latency_ms": percentiles(d.intake.post_latencies_ms()),
            "enable_put_s": round(d.enable_put_s, 3),
            "first_delivery_after_enable_s": round(d.first_delivery_s, 3),
            "drain_s": round(d.drain_s, 3),
            "peak_rss_mb_after_intake": round(d.before.peak_rss_mb, 1),
            "rss_mb_after_drain": round(d.after.rss_mb, 1),
            "cpu_ms_per_job_intake": round((d.before.cpu_s - d.start.cpu_s) * 1000 / accepted, 3),
            "cpu_ms_per_job_drain": round((d.after.cpu_s - d.before.cpu_s) * 1000 / accepted, 3),
            "sink_requests": d.stats["total"],
            "duplicate_deliveries": d.stats["total"] - d.stats["distinct"],
            "warnings_logged": self.log.warnings,
            "errors_logged": self.log.errors,
            "csjd_exit_status": self.code,
        }


async def backlog_phase(
    args: argparse.Namespace,
    tmp: Path,
    sink: Service,
    *,
    name: str,
    database_url: str,
    key_prefix: str,
    parked: int,
    kind: Parked,
) -> BacklogPhase:
    """A csjd on ``database_url``, where ``parked`` jobs wait at ``parked`` as ``kind`` says.

    Registers ``bench`` disabled and ``parked`` (enabled as ``kind`` says),
    checks that ``parked`` holds ``parked`` jobs in ``kind.state``, queues
    ``--jobs`` jobs at ``bench`` and drains them (``queue_then_drain``), then
    checks that the parked jobs are all still waiting and that none reached
    the sink.
    """
    async with client_session(2) as control:
        await sink_reset(control, sink)
    # room for the parked jobs, this phase's batch and some
    extra_env = {"CSJD_MAX_BACKLOG": str(args.big_backlog + 2 * args.jobs)}
    started = time.monotonic()
    gateway = start_csjd(tmp, name, database_url, extra_env=extra_env)
    try:
        async with client_session(8) as control:
            await gateway.wait_ready(control, "/readyz")
            ready_s = time.monotonic() - started
            at_ready = sample_proc(gateway.proc.pid)
            say(f"{name} ready in {ready_s:.2f}s, RSS {at_ready.rss_mb:.1f} MB")
            target = await register_paused(control, gateway, sink)
            parked_target = {
                "url": f"{sink.base_url}{PARKED_PATH}",
                "max_concurrency": 256,
                "enabled": kind.enabled,
            }
            await put_target(control, gateway, PARKED_TARGET, parked_target)
            t0 = time.perf_counter()
            waiting = (await target_backlog(control, gateway, PARKED_TARGET)).get(kind.state, 0)
            get_target_s = time.perf_counter() - t0
            if waiting != parked:
                raise BenchError(
                    f"{PARKED_TARGET} has {waiting} jobs {kind.state} at start, not {parked}"
                )
            say(
                f"pushing {args.jobs} jobs over {args.concurrency} connections "
                f"(target disabled; {parked} jobs {kind.state} at {PARKED_TARGET})"
            )
            drained = await queue_then_drain(
                control,
                gateway,
                sink,
                target,
                jobs=args.jobs,
                concurrency=args.concurrency,
                deadline_s=args.deadline,
                key_prefix=key_prefix,
            )
            still = (await target_backlog(control, gateway, PARKED_TARGET)).get(kind.state, 0)
            leaked = (await sink_stats(control, sink, path=PARKED_PATH))["total"]
        say("every accepted job was delivered; stopping csjd")
    finally:
        code = await gateway.stop()
    report_exit(gateway, code)
    if still != parked or leaked:
        raise BenchError(
            f"{PARKED_TARGET} ended with {still} of {parked} jobs {kind.state}, "
            f"and the sink got {leaked} requests on {PARKED_PATH}"
        )
    return BacklogPhase(
        drained=drained,
        ready_s=ready_s,
        at_ready=at_ready,
        get_target_s=get_target_s,
        log=report_log(gateway),
        code=code,
    )


async def big_backlog(args: argparse.Namespace, tmp: Path, sink: Service) -> dict[str, Any]:
    """Intake and claim rates with ``--big-backlog`` jobs queued, next to an empty database."""
    return await backlog_scenario(args, tmp, sink, PARKED_QUEUED)


async def big_backlog_scheduled(
    args: argparse.Namespace, tmp: Path, sink: Service
) -> dict[str, Any]:
    """Intake and claim rates with ``--big-backlog`` jobs scheduled far ahead, next to an
    empty database."""
    return await backlog_scenario(args, tmp, sink, PARKED_SCHEDULED)


async def backlog_scenario(
    args: argparse.Namespace, tmp: Path, sink: Service, kind: Parked
) -> dict[str, Any]:
    """Phase A on an empty file, ``--big-backlog`` jobs seeded as ``kind`` says, phase B."""
    name = f"big_backlog_{kind.state}.db"
    async with fresh_database(args, tmp, name) as database_url:
        return await backlog_phases(args, tmp, sink, kind, database_url)


async def backlog_phases(
    args: argparse.Namespace, tmp: Path, sink: Service, kind: Parked, database_url: str
) -> dict[str, Any]:
    say("phase A: an empty database")
    empty = await backlog_phase(
        args,
        tmp,
        sink,
        name=f"csjd_big_{kind.state}_empty",
        database_url=database_url,
        key_prefix="empty",
        parked=0,
        kind=kind,
    )
    enabled = "enabled" if kind.enabled else "disabled"
    say(f"seeding {args.big_backlog} {kind.state} jobs for the {enabled} target {PARKED_TARGET}")
    t0 = time.perf_counter()
    if args.db == "postgres":
        db_mb = await seed_parked_postgres(database_url, args.big_backlog, kind)
    else:
        path = Path(database_url.removeprefix("sqlite+aiosqlite:///"))
        db_mb = await asyncio.to_thread(seed_parked, path, args.big_backlog, kind)
    seed_s = time.perf_counter() - t0
    say(f"  seeded in {seed_s:.1f}s; the database is {db_mb:.0f} MB")
    say(f"phase B: {args.big_backlog} jobs {kind.state}")
    full = await backlog_phase(
        args,
        tmp,
        sink,
        name=f"csjd_big_{kind.state}_full",
        database_url=database_url,
        key_prefix="full",
        parked=args.big_backlog,
        kind=kind,
    )

    e, f = empty.figures(), full.figures()
    ratios = {
        "intake_full_to_empty": round(f["intake_per_s"] / e["intake_per_s"], 3),
        "claim_full_to_empty": round(f["claim_per_s"] / e["claim_per_s"], 3),
    }
    return {
        "backlog": args.big_backlog,
        "backlog_state": kind.state,
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "seed_s": round(seed_s, 1),
        "empty": e,
        "full": f,
        "ratios": ratios,
        "targets": {"rss_mb_max": BIG_BACKLOG_RSS_MAX_MB, "ratio_min": BIG_BACKLOG_RATIO_MIN},
        "within_targets": {
            "rss": f["peak_rss_mb"] < BIG_BACKLOG_RSS_MAX_MB,
            "intake": ratios["intake_full_to_empty"] >= BIG_BACKLOG_RATIO_MIN,
            "claim": ratios["claim_full_to_empty"] >= BIG_BACKLOG_RATIO_MIN,
        },
        "detail": {
            "db_mb": round(db_mb, 1),
            "seed_rows_per_s": round(args.big_backlog / seed_s),
            "empty": empty.detail(),
            "full": full.detail(),
        },
    }


QUEUED = scenario("big_backlog", big_backlog)
SCHEDULED = scenario("big_backlog_scheduled", big_backlog_scheduled)
