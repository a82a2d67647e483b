"""The ``dashboard`` scenario (SQLite only): does the dashboard cost more with more
jobs stored? For each size in ``--stored`` (default 1,000 and 1,000,000), on a
fresh file: csjd starts (and migrates), ``TARGETS`` targets are registered,
disabled (nothing is ever sent), and csjd stops; the jobs are inserted straight
into the file through the app's own table, spread over the targets and over the
last ``SPREAD_S`` seconds (so all of them fall in the dashboard's 15 minutes), in
the mix ``MIX`` says, with the per-target counts the writes would have kept
(``app/storage/counts.py``; left out on a schema without them, so that the same
run measures a csjd from before them). csjd starts again on the file; once it
answers, ``GET /ui``, ``GET /targets`` and ``GET /ui/live.json`` (where it
exists) are asked in turn, ``--requests`` rounds after a warm-up, over one
connection, and timed. The line has each path's median and p90 per size, the
CPU csjd spent per request, and the ratio of the largest size's medians to
the smallest's. The goal: the same cost, ratios near 1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import create_engine, insert

from app.core.ids import uuid7
from app.storage.models import jobs as jobs_table
from bench.harness import BenchError, say
from bench.harness.gateway import put_target, seed_counts, start_csjd
from bench.harness.lines import one_csjd, percentiles, scenario
from bench.harness.loadgen import client_session
from bench.harness.procs import Service, report_exit, sample_proc

TARGETS = 10
#: the jobs' states, and their shares: a deep backlog and a busy quarter of an hour
MIX = (("queued", 0.40), ("scheduled", 0.05), ("succeeded", 0.50), ("failed", 0.05))
#: the seeded jobs were created over this many seconds, ending as the seeding starts
SPREAD_S = 600.0
SEED_CHUNK = 50_000
WARM_UP = 3
PATHS = ("/ui", "/targets", "/ui/live.json")
DEFAULT_STORED = (1_000, 1_000_000)


@dataclass
class Seeded:
    """What was inserted, as the counts a csjd keeps would say it."""

    backlog: Counter[tuple[str, str]] = field(default_factory=Counter)
    minutes: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def job(self, target: str, state: str, created: float, completed: float | None) -> None:
        if state in ("queued", "scheduled"):
            self.backlog[target, state] += 1
        self._minute(target, created)[0] += 1
        if completed is not None:
            self._minute(target, completed)[1 if state == "succeeded" else 2] += 1

    def _minute(self, target: str, at: float) -> list[int]:
        return self.minutes.setdefault((target, int(at // 60) * 60), [0, 0, 0])


def target_names() -> list[str]:
    return [f"t{i:02d}" for i in range(TARGETS)]


def seed(path: Path, n: int, rng: random.Random) -> Seeded:
    """Insert ``n`` jobs into the SQLite file ``path`` (csjd stopped, targets registered)."""
    now = time.time()
    states = [state for state, _ in MIX]
    weights = [share for _, share in MIX]
    names = target_names()
    seeded = Seeded()
    engine = create_engine(f"sqlite:///{path}")
    try:
        for low in range(0, n, SEED_CHUNK):
            rows = []
            for i in range(low, min(n, low + SEED_CHUNK)):
                created = now - SPREAD_S + SPREAD_S * i / n
                state = rng.choices(states, weights)[0]
                target = names[i % len(names)]
                completed = created + 0.5 if state in ("succeeded", "failed") else None
                due = created + 30 * 86400 if state == "scheduled" else created
                payload = b'{"i":%d}' % i
                seeded.job(target, state, created, completed)
                rows.append(
                    {
                        "id": uuid7(int(created * 1000)),
                        "caller": "",
                        "idempotency_key": f"seeded-{i}",
                        "fingerprint": hashlib.sha256(payload).hexdigest(),
                        "target": target,
                        "payload": payload,
                        "headers": None,
                        "state": state,
                        "attempts": 1 if completed else 0,
                        "deliveries": 1 if completed else 0,
                        "max_attempts": 10,
                        "created_at": created,
                        "updated_at": completed or created,
                        "next_attempt_at": None if completed else due,
                        "expires_at": now + 60 * 86400,
                        "completed_at": completed,
                        "failure_reason": "permanent_status" if state == "failed" else None,
                        "last_status_code": {"succeeded": 200, "failed": 400}.get(state),
                    }
                )
            with engine.begin() as conn:
                conn.execute(insert(jobs_table), rows)
            if (low // SEED_CHUNK) % 5 == 4:
                say(f"  ... {low + len(rows)}/{n} rows")
        minutes = {key: (a, s, f) for key, (a, s, f) in seeded.minutes.items()}
        if not seed_counts(engine, dict(seeded.backlog), minutes):
            say("  (a schema without per-target counts: none written)")
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    return seeded


@dataclass
class Timed:
    """One path asked ``--requests`` times."""

    path: str
    wall_ms: list[float] = field(default_factory=list)
    #: csjd's CPU while it answered this path, per request
    cpu_ms: float = 0.0
    missing: bool = False

    def figures(self) -> dict[str, Any] | None:
        if self.missing:
            return None
        return {**percentiles(self.wall_ms, (50, 90)), "cpu_ms": round(self.cpu_ms, 2)}


async def time_paths(
    session: aiohttp.ClientSession, gateway: Service, requests: int
) -> list[Timed]:
    """Each of ``PATHS`` asked in turn, round after round, so that whatever else csjd
    does meanwhile (maintenance counts the jobs by state every few seconds) falls
    on all of them alike."""
    timed = [Timed(path) for path in PATHS]
    cpu_s = [0.0] * len(PATHS)
    for round_ in range(WARM_UP + requests):
        for i, t in enumerate(timed):
            if t.missing:
                continue
            cpu_before = sample_proc(gateway.proc.pid).cpu_s
            started = time.perf_counter()
            async with session.get(gateway.base_url + t.path) as response:
                await response.read()
                status = response.status
            wall_ms = (time.perf_counter() - started) * 1000
            if status == 404:
                say(f"  {t.path}: not there in this csjd")
                t.missing = True
                continue
            if status != 200:
                raise BenchError(f"GET {t.path} answered {status}")
            if round_ >= WARM_UP:
                t.wall_ms.append(wall_ms)
                cpu_s[i] += sample_proc(gateway.proc.pid).cpu_s - cpu_before
    for t, cpu in zip(timed, cpu_s, strict=True):
        t.cpu_ms = cpu * 1000 / requests
    return timed


async def one_size(args: argparse.Namespace, tmp: Path, n: int) -> dict[str, Any]:
    path = tmp / f"dashboard_{n}.db"
    url = f"sqlite+aiosqlite:///{path}"
    gateway = start_csjd(tmp, f"csjd_dashboard_{n}_setup", url)
    try:
        async with client_session(2) as control:
            await gateway.wait_ready(control, "/readyz")
            disabled = {"url": "http://127.0.0.1:9/hook", "enabled": False}
            for name in target_names():
                await put_target(control, gateway, name, disabled)
    finally:
        code = await gateway.stop()
    report_exit(gateway, code)
    say(f"seeding {n} jobs over {TARGETS} targets")
    t0 = time.perf_counter()
    seeded = await asyncio.to_thread(seed, path, n, random.Random(n))
    seed_s = time.perf_counter() - t0
    say(f"  seeded in {seed_s:.1f}s; the database file is {path.stat().st_size / 2**20:.0f} MB")
    extra_env = {"CSJD_MAX_BACKLOG": str(2 * n + 1000)}
    started = time.monotonic()
    gateway = start_csjd(tmp, f"csjd_dashboard_{n}", url, extra_env=extra_env)
    try:
        async with client_session(1) as session:
            await gateway.wait_ready(session, "/readyz")
            ready_s = time.monotonic() - started
            timed = await time_paths(session, gateway, args.requests)
            async with session.get(gateway.base_url + "/targets") as response:
                shown = {t["name"]: t["state"]["backlog"] for t in await response.json()}
    finally:
        code = await gateway.stop()
    report_exit(gateway, code)
    for (target, state), count in seeded.backlog.items():
        if shown[target][state] != count:
            raise BenchError(f"{target} shows {shown[target][state]} jobs {state}, not {count}")
    figures = {t.path: t.figures() for t in timed}
    for t in timed:
        if not t.missing:
            say(f"  GET {t.path}: median {percentiles(t.wall_ms, (50,))['p50']} ms")
    return {
        "jobs": n,
        "ui_ms": figures["/ui"],
        "targets_ms": figures["/targets"],
        "live_ms": figures["/ui/live.json"],
        "detail": {"seed_s": round(seed_s, 1), "ready_s": round(ready_s, 2), "exit": code},
    }


async def dashboard(args: argparse.Namespace, tmp: Path, sink: Service) -> dict[str, Any]:
    """``GET /ui``, ``/targets`` and ``/ui/live.json`` timed with each of ``--stored`` jobs."""
    sizes = [await one_size(args, tmp, n) for n in args.stored]
    small, large = sizes[0], sizes[-1]
    ratios = {
        f"{key}_median": round(large[key]["p50"] / small[key]["p50"], 2)
        for key in ("ui_ms", "targets_ms", "live_ms")
        if large[key] and small[key]
    }
    return {
        "targets": TARGETS,
        "requests": args.requests,
        "sizes": [{k: v for k, v in size.items() if k != "detail"} for size in sizes],
        "largest_to_smallest": ratios,
        "detail": {str(size["jobs"]): size["detail"] for size in sizes},
    }


SCENARIO = scenario(
    "dashboard",
    dashboard,
    lambda args: {"stored": args.stored, "requests": args.requests, **one_csjd(args)},
)
