"""The end-to-end benchmark behind ``make bench``: real processes, real sockets.

Seven scenarios, each on its own ``csjd serve`` with a fresh database (a SQLite
file in a temporary directory or, with ``--db postgres``, a Postgres database
created for the run and dropped after it), and one webhook sink
(``bench/sink.py``) in a separate process. ``end_to_end`` (the default)
registers the sink as target ``bench``, pushes ``--jobs`` jobs over
``--concurrency`` connections with a lean load generator (``http1.py``), and waits until
the sink has seen every accepted job; with ``--replicas N`` (Postgres only) N
``csjd serve`` share the database and the POSTs go to them round-robin. It then
measures two ceilings in the same run, one after the other (never alongside
csjd): the same load generator against a bare FastAPI app under uvicorn
(``bench/bare_app.py``), and an aiohttp client alone posting to the sink.
``outage`` registers target ``flaky``, offers a paced ``--rate`` jobs/s for
``--duration`` s, makes the sink answer ``500`` for ``--outage-s`` s from
``--outage-start`` s on, waits until every accepted job has been delivered (or
has failed), and reports how many requests the target had to take per job and
how they were spread in time. ``intake`` registers ``bench`` disabled (its
jobs stay queued) and pushes ``--jobs`` jobs as ``end_to_end`` does: intake
alone, next to the bare FastAPI ceiling. ``drain`` registers ``bench``
disabled, queues ``--backlog`` jobs, enables it and times csjd delivering the
whole backlog, next to the outbound client ceiling.

``big_backlog`` (SQLite only; about 2.5 minutes with the defaults) checks that a
deep queue costs nothing: RSS under 150 MB, intake and claim rates within 20 %
of an empty database. Phase A, on a fresh file: ``bench`` and ``parked`` are
registered disabled, ``--jobs`` jobs are queued at ``bench`` (the intake rate),
then ``bench`` is enabled and drained (the claim rate), as in ``drain``. With
csjd stopped, ``--big-backlog`` queued jobs (default 1,000,000) for ``parked``
are inserted straight into the file through the app's own table. Phase B: csjd
starts again on that file, and the same measurement runs with new
idempotency keys while ``parked`` keeps its jobs queued (checked at the end).
``CSJD_MAX_BACKLOG`` is raised to make room.

``big_backlog_scheduled`` is the same with the backlog scheduled instead: the
seeded jobs are due 1 to 20 days from now (spread evenly), ``parked`` is
enabled, and the dispatcher and maintenance run their statements over a
million jobs that are not due (promotion, the next due time, expiry, the
state gauge). ``parked`` must end with all of them still scheduled and none
sent.

``soak`` (10 minutes with the defaults; not part of ``all``) offers ``--rate``
jobs/s (default 350: half load) to a healthy ``bench`` for ``--duration`` s
(default 600), samples csjd's RSS every 10 s, and reports the RSS drift from
the first minute to the last (goal: within 10 %) and the enqueue-to-delivery
p50/p99 per minute of send time (goal: a steady p99).

``--scenario all`` runs every scenario but ``soak`` (the ``big_backlog`` ones only
with ``--db sqlite``). One JSON line per scenario goes to stdout; progress goes to
stderr.

Usage: ``python bench/run.py
[--scenario end_to_end|outage|intake|drain|big_backlog|big_backlog_scheduled|soak|all]
[--jobs 20000]
[--concurrency 64] [--skip-ceilings] [--replicas 1] [--rate 100] [--duration 60]
[--outage-start 10] [--outage-s 30] [--backlog 100000] [--big-backlog 1000000]
[--db sqlite|postgres] [--pg-admin-url URL] [--deadline 600] [--keep]``
(``--rate`` and ``--duration`` default to 350 and 600 with ``--scenario soak``)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import math
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import http1  # bench/ is on sys.path when this runs as a script
import orjson
from sqlalchemy import create_engine, insert

from app.core.ids import uuid7
from app.storage.models import jobs as jobs_table

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
READY_DEADLINE_S = 30.0
STOP_DEADLINE_S = 60.0
POLL_S = 0.05
#: uvicorn exits 0 after a graceful shutdown, or re-raises the signal it caught
CLEAN_EXITS = (0, -signal.SIGTERM)
REQUEST_TIMEOUT_S = 120.0
#: how often the outage scenario asks csjd for its failed jobs while waiting
FAILED_POLL_S = 2.0
OUTAGE_TARGET = "flaky"
OUTAGE_PATH = "/flaky"
#: workers sharing a paced load (outage, soak), so that a slow answer does not hold up the pacing
PACED_WORKERS = 32
#: the window after recovery that ``max_requests_per_s_after_recovery`` looks at
AFTER_RECOVERY_S = 10.0
#: where ``--db postgres`` creates (and drops) its database, unless ``--pg-admin-url``
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_CONNECT_TIMEOUT_S = 10.0
#: warnings every csjd logs in this setup (no API keys), left out of the log counts
EXPECTED_WARNINGS = frozenset({"auth_disabled"})
#: --rate and --duration when not given: the outage scenario's, and the soak's (half load)
OUTAGE_RATE, OUTAGE_DURATION_S = 100.0, 60.0
SOAK_RATE, SOAK_DURATION_S = 350.0, 600.0
#: how often the soak samples csjd's RSS and the sink's count
SOAK_SAMPLE_S = 10.0
#: the soak's goal: RSS over its last minute within this of its first minute (percent)
SOAK_RSS_DRIFT_MAX_PCT = 10.0
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

T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark could not produce a valid result; the message says why."""


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    """A child process whose stdout and stderr go to a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    base_url: str

    @classmethod
    def start(
        cls, name: str, argv: Sequence[str], *, port: int, tmp: Path, env: dict[str, str]
    ) -> Service:
        log_path = tmp / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                list(argv),
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        service = cls(name=name, proc=proc, log_path=log_path, base_url=f"http://{HOST}:{port}")
        STARTED.append(service)
        return service

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchError(
                f"{self.name} exited with status {code}; its log ends:\n{self.log_tail()}"
            )

    async def wait_ready(self, session: aiohttp.ClientSession, path: str) -> None:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            self.check_alive()
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(self.base_url + path) as response:
                    await response.read()
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.name} did not answer 200 on {path} within {READY_DEADLINE_S:g}s; "
                    f"its log ends:\n{self.log_tail()}"
                )
            await asyncio.sleep(POLL_S)

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Signal the process and wait for it (killing it after the deadline)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return await asyncio.to_thread(self.proc.wait, STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop within {STOP_DEADLINE_S:g}s of {sig.name}; killing it")
            self.proc.kill()
            return await asyncio.to_thread(self.proc.wait)

    def kill_if_alive(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


#: every service started, so that ``main`` can kill what an error left running
STARTED: list[Service] = []


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The parent's environment without any ``CSJD_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSJD_")}
    env.update(extra)
    return env


@dataclass(frozen=True)
class ProcSample:
    peak_rss_mb: float
    rss_mb: float
    cpu_s: float


def sample_proc(pid: int) -> ProcSample:
    """Peak and current RSS (``VmHWM``, ``VmRSS``) and user+system CPU, from /proc."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
    ticks = int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)
    return ProcSample(
        peak_rss_mb=fields["VmHWM"],
        rss_mb=fields["VmRSS"],
        cpu_s=ticks / os.sysconf("SC_CLK_TCK"),
    )


# -- the load generator -------------------------------------------------------------------


def client_session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


@dataclass
class Intake:
    """What the load generator saw: per job, when it was sent and the id it got."""

    jobs: int
    send_at: list[float]
    answered_at: list[float]
    ids: list[str | None]
    wall_s: float
    cpu_s: float
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    #: paced load only: the latest a POST went out after its due time
    max_lag_s: float = 0.0

    @classmethod
    def empty(cls, jobs: int) -> Intake:
        return cls(
            jobs=jobs,
            send_at=[0.0] * jobs,
            answered_at=[0.0] * jobs,
            ids=[None] * jobs,
            wall_s=0.0,
            cpu_s=0.0,
        )

    @property
    def accepted(self) -> int:
        return self.jobs - self.errors

    def post_latencies_ms(self) -> list[float]:
        """Per accepted job: the ``POST /jobs`` round trip (ms)."""
        return [
            (self.answered_at[i] - self.send_at[i]) * 1000
            for i, job_id in enumerate(self.ids)
            if job_id is not None
        ]

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    async def post(self, client: http1.Client, url: str, i: int, target: str, key: str) -> None:
        """POST job ``i``; it counts as accepted only when answered ``202`` with an ``id``."""
        body = orjson.dumps({"target": target, "payload": {"i": i}})
        headers = {"content-type": "application/json", "idempotency-key": key}
        self.send_at[i] = time.time()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, raw = await client.post(url, body, headers)
        except (OSError, TimeoutError) as exc:
            self.error(f"job {i}: {type(exc).__name__}: {exc}")
            return
        self.answered_at[i] = time.time()
        if status != 202:
            self.error(f"job {i}: HTTP {status}: {raw[:200]!r}")
            return
        try:
            self.ids[i] = str(orjson.loads(raw)["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.error(f"job {i}: 202 without an id: {raw[:200]!r}")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def post_jobs(
    urls: Sequence[str],
    jobs: int,
    concurrency: int,
    target: str = "bench",
    key_prefix: str = "bench",
) -> Intake:
    """POST ``jobs`` jobs, round-robin over ``urls``, from ``concurrency`` workers on one session.

    Job ``i`` goes to ``urls[i % len(urls)]`` and carries ``Idempotency-Key:
    <key_prefix>-<i>``; a job counts as accepted only when answered ``202``
    with an ``id``. Anything else is an error.
    """
    result = Intake.empty(jobs)
    indexes = iter(range(jobs))  # shared by the workers: each takes the next job

    async def worker() -> None:
        client = http1.Client()  # one keep-alive connection per worker and host
        try:
            for i in indexes:
                await result.post(client, urls[i % len(urls)], i, target, f"{key_prefix}-{i}")
        finally:
            client.close()

    cpu0, t0 = own_cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - t0
    result.cpu_s = own_cpu_s() - cpu0
    return result


async def sleep_until(due: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``due`` (at once if it has)."""
    delay = due - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def offer_paced(
    url: str, *, rate: float, duration_s: float, start: float, target: str, workers: int
) -> Intake:
    """Offer ``rate`` jobs per second for ``duration_s`` from ``start`` (monotonic).

    Job ``i`` is due at ``start + i / rate`` and carries ``Idempotency-Key:
    <target>-<i>``. ``workers`` workers each take the next job, sleep until it
    is due and send it, so a slow answer holds up only its own worker; when
    every worker is waiting on an answer, jobs go out late (``max_lag_s``).
    """
    jobs = max(1, round(rate * duration_s))
    result = Intake.empty(jobs)
    indexes = iter(range(jobs))

    async def worker() -> None:
        client = http1.Client()
        try:
            for i in indexes:
                due = start + i / rate
                await sleep_until(due)
                result.max_lag_s = max(result.max_lag_s, time.monotonic() - due)
                await result.post(client, url, i, target, f"{target}-{i}")
        finally:
            client.close()

    cpu0 = own_cpu_s()
    await asyncio.gather(*(worker() for _ in range(workers)))
    result.wall_s = time.monotonic() - start
    result.cpu_s = own_cpu_s() - cpu0
    return result


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
            now = time.time()
            headers = {
                "content-type": "application/json",
                "user-agent": "csjd-bench",
                "webhook-id": f"outbound-{i}",
                "webhook-timestamp": str(int(now)),
                "idempotency-key": f"outbound-{i}",
                "csjd-attempt": "1",
            }
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


# -- measuring ------------------------------------------------------------------------------


def percentiles(values: list[float], points: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (and the max), rounded to 0.01."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {f"p{p:g}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in points}
    out["max"] = ordered[-1]
    return {k: round(v, 2) for k, v in out.items()}


def delivery_latencies(intake: Intake, first_at: dict[str, float]) -> list[tuple[float, float]]:
    """Per accepted job: (when its POST was sent, enqueue-to-delivery in ms).

    Enqueue to delivery is the sink's first arrival of the job minus the
    ``time.time()`` its POST was sent; fails if an accepted job never arrived.
    """
    out: list[tuple[float, float]] = []
    missing = 0
    for i, job_id in enumerate(intake.ids):
        if job_id is None:
            continue
        arrived = first_at.get(job_id)
        if arrived is None:
            missing += 1
            continue
        out.append((intake.send_at[i], (arrived - intake.send_at[i]) * 1000))
    if missing:
        raise BenchError(f"{missing} accepted job ids never reached the sink")
    return out


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


# -- the scenarios ----------------------------------------------------------------------------


async def pg_admin(admin_url: str, statement: str) -> None:
    """Run one statement (outside a transaction) on a fresh connection to ``admin_url``."""
    try:
        conn = await asyncpg.connect(admin_url, timeout=PG_CONNECT_TIMEOUT_S)
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise BenchError(f"cannot connect to {admin_url}: {type(exc).__name__}: {exc}") from None
    try:
        await conn.execute(statement)
    except asyncpg.PostgresError as exc:
        raise BenchError(f"{statement}: {type(exc).__name__}: {exc}") from None
    finally:
        await conn.close()


def pg_database_url(admin_url: str, name: str) -> str:
    """``admin_url`` (its user, host, port, options) pointing at database ``name``, for csjd."""
    return urlsplit(admin_url)._replace(scheme="postgresql+asyncpg", path=f"/{name}").geturl()


@contextlib.asynccontextmanager
async def fresh_database(
    args: argparse.Namespace, tmp: Path, sqlite_name: str
) -> AsyncIterator[str]:
    """A fresh database for one scenario; yields its ``CSJD_DATABASE_URL``.

    SQLite: the file ``<tmp>/<sqlite_name>`` (it goes with the temp dir).
    Postgres: a database ``bench_<random hex>`` created through
    ``--pg-admin-url``, and dropped ``WITH (FORCE)`` when the block ends,
    however it ends (``--keep`` does not keep it).
    """
    if args.db == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp / sqlite_name}"
        return
    name = f"bench_{secrets.token_hex(6)}"
    await pg_admin(args.pg_admin_url, f'CREATE DATABASE "{name}"')
    say(f"created the Postgres database {name}")
    try:
        yield pg_database_url(args.pg_admin_url, name)
    finally:
        try:
            await pg_admin(args.pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except BenchError as exc:
            say(f"could not drop the Postgres database {name}: {exc}")
        else:
            say(f"dropped the Postgres database {name}")


def start_csjd(
    tmp: Path,
    name: str,
    database_url: str,
    role: str = "all",
    extra_env: dict[str, str] | None = None,
) -> Service:
    """``csjd serve`` on a free port and ``database_url``; log to ``<tmp>/<name>.log``.

    ``extra_env`` adds (or overrides) ``CSJD_*`` settings, ``CSJD_MAX_BACKLOG`` say.
    """
    port = free_port()
    env = child_env(
        {
            "CSJD_DATABASE_URL": database_url,
            "CSJD_ALLOW_PRIVATE_TARGETS": "true",
            "CSJD_LOG_FORMAT": "json",
            **(extra_env or {}),
        }
    )
    argv = [sys.executable, "-m", "app", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--role", role]
    say(f"starting {name} on port {port} (database {database_url})")
    return Service.start(name, argv, port=port, tmp=tmp, env=env)


@dataclass
class LogSummary:
    """What one csjd's JSON log holds: delivery attempts, and what went wrong."""

    delivery_attempts: int = 0
    warnings: int = 0
    errors: int = 0
    #: lines that are not a JSON event (a traceback printed past the logger, say)
    other_lines: int = 0
    samples: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path, max_samples: int = 5) -> LogSummary:
        summary = cls()
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            return summary
        for line in lines:
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
                level, name = event["level"], event["event"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                summary.other_lines += 1
                summary.sample(line.decode(errors="replace"), max_samples)
                continue
            if name == "delivery":
                summary.delivery_attempts += 1
            if level == "warning" and name not in EXPECTED_WARNINGS:
                summary.warnings += 1
            elif level in ("error", "critical"):
                summary.errors += 1
            else:
                continue
            summary.sample(line.decode(errors="replace"), max_samples)
        return summary

    def sample(self, line: str, max_samples: int) -> None:
        if len(self.samples) < max_samples:
            self.samples.append(line[:500])


def report_log(gateway: Service) -> LogSummary:
    """Read a stopped csjd's log; say what it logged beyond the expected, if anything."""
    summary = LogSummary.read(gateway.log_path)
    if summary.warnings or summary.errors or summary.other_lines:
        say(
            f"{gateway.name} logged {summary.errors} errors, {summary.warnings} warnings "
            f"and {summary.other_lines} other lines; the first:"
        )
        for line in summary.samples:
            say(f"  {line}")
    return summary


async def put_target(
    session: aiohttp.ClientSession, gateway: Service, name: str, target: dict[str, Any]
) -> None:
    async with session.put(gateway.base_url + f"/targets/{name}", json=target) as response:
        if response.status not in (200, 201):
            raise BenchError(
                f"PUT /targets/{name} answered {response.status}: {await response.text()}"
            )


async def end_to_end(args: argparse.Namespace, tmp: Path, sink: Service) -> dict[str, Any]:
    replicas: int = args.replicas
    names = ["csjd"] if replicas == 1 else [f"csjd-{k}" for k in range(replicas)]
    # --split: one process takes the API (all the intake), another delivers
    roles = ["api", "dispatcher"] if args.split else ["all"] * replicas
    if args.split:
        names = ["csjd-api", "csjd-dispatcher"]
    gateways: list[Service] = []
    async with fresh_database(args, tmp, "bench.db") as database_url:
        try:
            async with client_session(8) as control:
                # The first one migrates the database alone and takes the target; the
                # others start after that, so each dispatcher knows the target from its
                # start (a target put elsewhere reaches it only at its next refresh).
                gateways.append(start_csjd(tmp, names[0], database_url, roles[0]))
                await gateways[0].wait_ready(control, "/readyz")
                target = {"url": f"{sink.base_url}/hook", "max_concurrency": 256}
                await put_target(control, gateways[0], "bench", target)
                gateways.extend(
                    start_csjd(tmp, name, database_url, role)
                    for name, role in zip(names[1:], roles[1:], strict=True)
                )
                for gateway in gateways[1:]:
                    await gateway.wait_ready(control, "/readyz")
                at_ready = [sample_proc(gateway.proc.pid) for gateway in gateways]

                spread = f", round-robin over {replicas} replicas" if replicas > 1 else ""
                say(f"pushing {args.jobs} jobs over {args.concurrency} connections{spread}")
                intake_gateways = gateways[:1] if args.split else gateways
                urls = [gateway.base_url + "/jobs" for gateway in intake_gateways]
                intake = await post_jobs(urls, args.jobs, args.concurrency)
                report_intake(intake)

                await wait_delivered(control, sink, gateways, intake.accepted, args.deadline)
                after = [sample_proc(gateway.proc.pid) for gateway in gateways]
                stats = await sink_stats(control, sink, times=True)
            say("every accepted job was delivered; stopping csjd")
        finally:
            codes = list(await asyncio.gather(*(gateway.stop() for gateway in gateways)))
    for gateway, code in zip(gateways, codes, strict=True):
        if code not in CLEAN_EXITS:
            say(
                f"{gateway.name} exited with status {code} on SIGTERM; its log ends:\n"
                f"{gateway.log_tail()}"
            )
    logs = [report_log(gateway) for gateway in gateways]

    first_at: dict[str, float] = stats["first_at"]
    latencies = [ms for _sent_at, ms in delivery_latencies(intake, first_at)]
    post_ms = intake.post_latencies_ms()
    first_send = min(intake.send_at)
    last_delivery = max(first_at.values())
    span_s = last_delivery - first_send
    cpu_s = sum(end.cpu_s - start.cpu_s for start, end in zip(at_ready, after, strict=True))
    per_replica = [
        {
            "name": gateway.name,
            "peak_rss_mb": round(end.peak_rss_mb, 1),
            "cpu_s": round(end.cpu_s - start.cpu_s, 2),
            "rss_at_ready_mb": round(start.rss_mb, 1),
            "cpu_s_total": round(end.cpu_s, 2),
            "delivery_attempts_logged": summary.delivery_attempts,
            "warnings_logged": summary.warnings,
            "errors_logged": summary.errors,
            "other_log_lines": summary.other_lines,
            "exit_status": code,
        }
        for gateway, start, end, summary, code in zip(
            gateways, at_ready, after, logs, codes, strict=True
        )
    ]
    return {
        "accepted": intake.accepted,
        "errors": intake.errors,
        "accepted_per_s": round(intake.accepted / intake.wall_s, 1),
        "delivered_per_s": round(intake.accepted / span_s, 1),
        "enqueue_to_delivery_ms": percentiles(latencies),
        "post_latency_ms": percentiles(post_ms),
        "peak_rss_mb": round(sum(end.peak_rss_mb for end in after), 1),
        "cpu_s": round(cpu_s, 2),
        "cpu_ms_per_job": round(cpu_s * 1000 / intake.accepted, 3),
        "detail": {
            "intake_s": round(intake.wall_s, 3),
            "first_post_to_last_delivery_s": round(span_s, 3),
            "rss_at_ready_mb": round(sum(start.rss_mb for start in at_ready), 1),
            "csjd_cpu_s_total": round(sum(end.cpu_s for end in after), 2),
            "loadgen_cpu_s_intake": round(intake.cpu_s, 2),
            "sink_requests": stats["total"],
            "duplicate_deliveries": stats["total"] - stats["distinct"],
            # the first replica's, unless another one did not exit cleanly
            "csjd_exit_status": next((c for c in codes if c not in CLEAN_EXITS), codes[0]),
            "per_replica": per_replica,
        },
    }


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


async def outbound_ceiling(args: argparse.Namespace, sink: Service) -> float:
    say(f"ceiling: aiohttp client alone, {args.jobs} POSTs to the sink")
    wall_s, errors = await post_outbound(sink.base_url + "/hook", args.jobs, args.concurrency)
    async with client_session(2) as control:
        stats = await sink_stats(control, sink)
        await sink_reset(control, sink)
    if errors or stats["distinct"] != args.jobs:
        raise BenchError(
            f"the outbound ceiling run had {errors} errors; the sink saw {stats['distinct']} ids"
        )
    rate = args.jobs / wall_s
    say(f"  outbound client: {rate:.0f} POST/s")
    return rate


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


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


async def register_paused(
    control: aiohttp.ClientSession, gateway: Service, sink: Service
) -> dict[str, Any]:
    """Wait for ``gateway`` and register target ``bench`` disabled (queued, not sent)."""
    await gateway.wait_ready(control, "/readyz")
    target = {"url": f"{sink.base_url}/hook", "max_concurrency": 256, "enabled": False}
    await put_target(control, gateway, "bench", target)
    return target


def report_intake(intake: Intake) -> None:
    say(f"intake done in {intake.wall_s:.2f}s: {intake.accepted} accepted, {intake.errors} errors")
    report_errors(intake)


def report_paced(intake: Intake) -> None:
    say(
        f"load done: {intake.accepted} of {intake.jobs} accepted, {intake.errors} errors, "
        f"sent at most {intake.max_lag_s * 1000:.0f} ms late"
    )
    report_errors(intake)


def report_errors(intake: Intake) -> None:
    """Say what went wrong with a few of the POSTs; fail the run if none was accepted."""
    for sample in intake.error_samples:
        say(f"  error: {sample}")
    if intake.accepted == 0:
        raise BenchError("csjd accepted no job")


def report_exit(gateway: Service, code: int) -> None:
    if code not in CLEAN_EXITS:
        say(
            f"{gateway.name} exited with status {code} on SIGTERM; its log ends:\n"
            f"{gateway.log_tail()}"
        )


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
            "sink_requests": stats["total"],
            "duplicate_deliveries": stats["total"] - stats["distinct"],
            "csjd_exit_status": code,
        },
    }


# -- big_backlog ------------------------------------------------------------------------------


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


def seed_parked(path: Path, n: int, parked: Parked) -> None:
    """Insert ``n`` jobs for ``PARKED_TARGET`` straight into the SQLite file ``path``.

    csjd must be stopped, and the target registered. The rows are what
    ``SqlJobStore`` stores for a job it accepts as queued or scheduled
    (``_row_values`` in ``app/storage/sql.py``), through the app's own table:
    caller ``""`` (no API keys), ``Idempotency-Key: parked-<i>``, payload
    ``{"i":<i>}``, one job per millisecond ending an hour ago (uuid7 ids of
    those milliseconds, so they sort before anything csjd accepts later),
    expiring in ``PARKED_TTL_S``; due when created (queued) or as
    ``Parked.next_attempt_at`` says (scheduled). ``SEED_CHUNK`` rows per
    transaction; then the WAL is checkpointed, so that the next csjd starts on
    a settled file.
    """
    now = time.time()
    first_ms = int(now * 1000) - n - 3_600_000
    expires_at = now + PARKED_TTL_S
    engine = create_engine(f"sqlite:///{path}")
    try:
        for low in range(0, n, SEED_CHUNK):
            rows = []
            for i in range(low, min(n, low + SEED_CHUNK)):
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
                        "expires_at": expires_at,
                    }
                )
            with engine.begin() as conn:
                conn.execute(insert(jobs_table), rows)
            if (low // SEED_CHUNK) % 5 == 4:
                say(f"  ... {low + len(rows)}/{n} rows")
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()


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
    path = tmp / f"big_backlog_{kind.state}.db"
    database_url = f"sqlite+aiosqlite:///{path}"
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
    await asyncio.to_thread(seed_parked, path, args.big_backlog, kind)
    seed_s = time.perf_counter() - t0
    db_mb = path.stat().st_size / 2**20
    say(f"  seeded in {seed_s:.1f}s; the database file is {db_mb:.0f} MB")
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
            "db_file_mb": round(db_mb, 1),
            "seed_rows_per_s": round(args.big_backlog / seed_s),
            "empty": empty.detail(),
            "full": full.detail(),
        },
    }


# -- soak -------------------------------------------------------------------------------------


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


def machine(load_avg: list[float], loop_name: str) -> dict[str, Any]:
    """Where and when a scenario ran."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_avg_at_start": load_avg,
        "platform": platform.platform(),
        "loop": loop_name,
        "commit": git_commit(),
    }


def load_avg_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def scenario_line(
    scenario: str,
    fields: dict[str, Any],
    result: dict[str, Any],
    load_avg: list[float],
    loop_name: str,
    measured: tuple[dict[str, float] | None, dict[str, float] | None] | None = None,
) -> dict[str, Any]:
    """One scenario's JSON line: its name and flags, its figures, the ceilings and
    ratios of scenarios that measure any, the machine, then the detail."""
    detail = result.pop("detail")
    line = {"scenario": scenario, **fields, **result}
    if measured is not None:
        line["ceilings"], line["ratios"] = measured
    return {**line, **machine(load_avg, loop_name), "detail": detail}


def one_csjd(args: argparse.Namespace) -> dict[str, Any]:
    return {"db": args.db, "replicas": 1}


BARE_FASTAPI = "bare_fastapi_post_per_s"
OUTBOUND_CLIENT = "outbound_client_per_s"
#: a ceiling's name -> (the ratio's name, the figure of the scenario divided by the ceiling)
CeilingSpec = dict[str, tuple[str, str]]


async def measure_ceilings(
    args: argparse.Namespace, tmp: Path, sink: Service, result: dict[str, Any], spec: CeilingSpec
) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """The ceilings ``spec`` names, measured now (csjd has stopped), and the ratios to them."""
    if args.skip_ceilings:
        return None, None
    ceilings: dict[str, float] = {}
    ratios: dict[str, float] = {}
    for name, (ratio, figure) in spec.items():
        if name == OUTBOUND_CLIENT:
            async with client_session(2) as control:
                await sink_reset(control, sink)
            value = await outbound_ceiling(args, sink)
        else:
            value = await bare_fastapi_ceiling(args, tmp)
        ceilings[name] = round(value, 1)
        ratios[ratio] = round(result[figure] / value, 3)
    return ceilings, ratios


Run = Callable[[argparse.Namespace, Path, Service], Coroutine[Any, Any, dict[str, Any]]]
ScenarioRunner = Callable[
    [argparse.Namespace, Path, Service, str], Coroutine[Any, Any, dict[str, Any]]
]


def scenario(
    name: str,
    run: Run,
    fields: Callable[[argparse.Namespace], dict[str, Any]] = one_csjd,
    ceilings: CeilingSpec | None = None,
) -> ScenarioRunner:
    """A scenario as ``bench`` runs it: its figures, then its ceilings, as one JSON line."""

    async def runner(
        args: argparse.Namespace, tmp: Path, sink: Service, loop_name: str
    ) -> dict[str, Any]:
        load_avg = load_avg_now()
        result = await run(args, tmp, sink)
        measured = None
        if ceilings is not None:
            measured = await measure_ceilings(args, tmp, sink, result, ceilings)
        return scenario_line(name, fields(args), result, load_avg, loop_name, measured)

    return runner


SCENARIOS = {
    "end_to_end": scenario(
        "end_to_end",
        end_to_end,
        lambda args: {
            "jobs": args.jobs,
            "concurrency": args.concurrency,
            "db": args.db,
            "replicas": args.replicas,
            "split": args.split,
        },
        {
            BARE_FASTAPI: ("accepted_vs_bare_fastapi", "accepted_per_s"),
            OUTBOUND_CLIENT: ("delivered_vs_outbound_client", "delivered_per_s"),
        },
    ),
    "outage": scenario("outage", outage),
    "intake": scenario(
        "intake",
        intake_only,
        lambda args: {"jobs": args.jobs, "concurrency": args.concurrency, **one_csjd(args)},
        {BARE_FASTAPI: ("accepted_vs_bare_fastapi", "accepted_per_s")},
    ),
    "drain": scenario(
        "drain",
        drain,
        lambda args: {"concurrency": args.concurrency, **one_csjd(args)},
        {OUTBOUND_CLIENT: ("drained_vs_outbound_client", "drained_per_s")},
    ),
    "big_backlog": scenario("big_backlog", big_backlog),
    "big_backlog_scheduled": scenario("big_backlog_scheduled", big_backlog_scheduled),
    "soak": scenario("soak", soak),
}
#: what ``--scenario all`` runs, in this order (the soak takes its 10 minutes only on demand)
IN_ALL = ("end_to_end", "outage", "intake", "drain", "big_backlog", "big_backlog_scheduled")
#: scenarios that seed a SQLite file directly, skipped by ``all`` with ``--db postgres``
SQLITE_ONLY = ("big_backlog", "big_backlog_scheduled")
#: scenarios that run one csjd, whatever --split and --replicas say
ONE_CSJD = ("intake", "drain", "big_backlog", "big_backlog_scheduled", "soak")


async def bench(args: argparse.Namespace, tmp: Path, loop_name: str) -> None:
    """Run the chosen scenarios on one sink, printing each one's JSON line when it ends."""
    names = list(IN_ALL) if args.scenario == "all" else [args.scenario]
    if args.db != "sqlite":
        for name in SQLITE_ONLY:
            if name in names:
                say(f"skipping {name}: it needs --db sqlite")
                names.remove(name)
    sink_port = free_port()
    sink_argv = [sys.executable, str(BENCH_DIR / "sink.py"), "--host", HOST, "--port"]
    say(f"starting the sink on port {sink_port}")
    sink = Service.start(
        "sink", [*sink_argv, str(sink_port)], port=sink_port, tmp=tmp, env=child_env({})
    )
    try:
        async with client_session(2) as control:
            await sink.wait_ready(control, "/_stats")
        for name in names:
            say(f"scenario {name}")
            result = await SCENARIOS[name](args, tmp, sink, loop_name)
            print(orjson.dumps(result).decode(), flush=True)
    finally:
        await sink.stop()


def run_loop(main: Callable[[str], Coroutine[Any, Any, T]]) -> T:
    """Run ``main(loop_name)`` on uvloop (as csjd's uvicorn does) when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main("asyncio"))
    return uvloop.run(main("uvloop"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs",
        type=int,
        default=20_000,
        help="end_to_end, intake: jobs to push; big_backlog: the measured batch, in each "
        "phase (default 20000)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="end_to_end, intake, drain, big_backlog: concurrent connections (default 64)",
    )
    parser.add_argument(
        "--skip-ceilings",
        action="store_true",
        help="end_to_end, intake, drain: measure csjd only, not the ceilings",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (path on stderr)"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=600.0,
        help="seconds to wait for every job to be delivered, or failed (default 600)",
    )
    parser.add_argument(
        "--scenario",
        choices=[*SCENARIOS, "all"],
        default="end_to_end",
        help="what to run (default end_to_end); all runs every one but soak, one JSON line each",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="run csjd as two processes on one database: --role api and --role dispatcher",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="end_to_end: csjd processes sharing the database, POSTs spread round-robin "
        "(default 1; more than 1 needs --db postgres)",
    )
    parser.add_argument(
        "--db",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="a fresh SQLite file in the temp dir, or a fresh Postgres database dropped "
        "after the run (default sqlite)",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=PG_ADMIN_URL,
        help=f"--db postgres: where to CREATE and DROP the database (default {PG_ADMIN_URL})",
    )
    paced = parser.add_argument_group("the outage and soak scenarios")
    paced.add_argument(
        "--rate",
        type=float,
        help=f"jobs offered per second (default {OUTAGE_RATE:g}; soak: {SOAK_RATE:g})",
    )
    paced.add_argument(
        "--duration",
        type=float,
        help=f"seconds of offered load (default {OUTAGE_DURATION_S:g}; soak: {SOAK_DURATION_S:g})",
    )
    paced.add_argument(
        "--outage-start",
        type=float,
        default=10.0,
        help="seconds into the load when the target starts answering 500 (default 10)",
    )
    paced.add_argument(
        "--outage-s", type=float, default=30.0, help="how long the target fails (default 30)"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=100_000,
        help="drain: jobs queued at the disabled target before it is enabled (default 100000)",
    )
    parser.add_argument(
        "--big-backlog",
        type=int,
        default=1_000_000,
        help="big_backlog: jobs seeded, queued at a disabled target, before the second "
        "measurement; big_backlog_scheduled: the same, scheduled days ahead at an enabled "
        "one (default 1000000)",
    )
    args = parser.parse_args(argv)
    # soak is never part of all, so one run needs one default
    soak = args.scenario == "soak"
    if args.rate is None:
        args.rate = SOAK_RATE if soak else OUTAGE_RATE
    if args.duration is None:
        args.duration = SOAK_DURATION_S if soak else OUTAGE_DURATION_S
    if args.jobs < 1 or args.concurrency < 1:
        parser.error("--jobs and --concurrency must be at least 1")
    if args.backlog < 1 or args.big_backlog < 1:
        parser.error("--backlog and --big-backlog must be at least 1")
    if args.scenario in SQLITE_ONLY and args.db != "sqlite":
        parser.error(f"the {args.scenario} scenario seeds a SQLite file: it needs --db sqlite")
    if soak and args.duration < SOAK_SAMPLE_S:
        parser.error(f"the soak scenario needs --duration of at least {SOAK_SAMPLE_S:g}s")
    if args.scenario in ONE_CSJD and (args.split or args.replicas > 1):
        parser.error(
            f"--split and --replicas apply to end_to_end; the {args.scenario} scenario "
            "runs one csjd"
        )
    if (
        not all(math.isfinite(x) for x in (args.rate, args.duration, args.outage_s))
        or min(args.rate, args.duration, args.outage_s) <= 0
    ):
        parser.error("--rate, --duration and --outage-s must be positive")
    if not (math.isfinite(args.outage_start) and args.outage_start >= 0):
        parser.error("--outage-start must not be negative")
    if args.split and (args.replicas > 1 or args.scenario == "outage"):
        parser.error("--split runs one api and one dispatcher process for end_to_end")
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    if args.replicas > 1 and args.db != "postgres":
        parser.error("--replicas above 1 needs --db postgres (replicas share one database)")
    if args.replicas > 1 and args.scenario == "outage":
        parser.error("--replicas applies to end_to_end; the outage scenario runs one csjd")
    if urlsplit(args.pg_admin_url).scheme not in ("postgresql", "postgres"):
        parser.error("--pg-admin-url must be a postgresql:// URL")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="csjd-bench-"))
    try:
        run_loop(lambda loop_name: bench(args, tmp, loop_name))
    except BenchError as exc:
        say(f"FAILED: {exc}")
        return 1
    finally:
        for service in STARTED:
            service.kill_if_alive()
        if args.keep:
            say(f"kept the temporary directory {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
