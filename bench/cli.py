"""The command line: parses and checks the flags (``--rate`` and ``--duration``
default by ``--scenario``), starts the one sink every scenario shares, runs
the chosen scenarios in order, printing each one's JSON line to stdout as it
ends, and turns a ``BenchError`` into exit status 1, after killing whatever a
failure left running and removing the temporary directory (unless
``--keep``). What each scenario does and prints is in its own module under
``scenarios/``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson

from app.api.schemas import MAX_BATCH_JOBS
from bench.harness import BenchError, say
from bench.harness.gateway import EVERY_CSJD, PG_ADMIN_URL
from bench.harness.loadgen import client_session
from bench.harness.procs import BENCH_DIR, HOST, STARTED, Service, child_env, free_port
from bench.scenarios import IN_ALL, ONE_CSJD, SCENARIOS, SQLITE_ONLY
from bench.scenarios.dashboard import DEFAULT_STORED as DASHBOARD_STORED
from bench.scenarios.intake import BATCH_CONCURRENCY, BATCH_SIZES
from bench.scenarios.outage import OUTAGE_DURATION_S, OUTAGE_RATE
from bench.scenarios.soak import SOAK_DURATION_S, SOAK_RATE, SOAK_SAMPLE_S

#: what ``--help`` says the benchmark is
DESCRIPTION = "The end-to-end benchmark behind ``make bench``: real processes, real sockets."

T = TypeVar("T")


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


def _sizes(text: str) -> list[int]:
    """``1000,1000000``: the sizes, each at least 1."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("each size must be at least 1")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument(
        "--jobs",
        type=int,
        default=20_000,
        help="end_to_end, intake: jobs to push; batch_intake: in each mode; big_backlog: the "
        "measured batch, in each phase (default 20000)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="end_to_end, intake, drain, big_backlog: concurrent connections; batch_intake: "
        "for the single POSTs (default 64)",
    )
    parser.add_argument(
        "--skip-ceilings",
        action="store_true",
        help="end_to_end, intake, batch_intake, drain: measure csjd only, not the ceilings",
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
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="end_to_end: run csjd as 'csjd serve --workers N' (default 1: one process)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="end_to_end: csjd processes sharing the database, POSTs spread round-robin "
        "(default 1; more than 1 needs --db postgres)",
    )
    parser.add_argument(
        "--delivery-client",
        choices=["reqwest", "aiohttp"],
        default=None,
        help="CSJD_DELIVERY_CLIENT for every csjd of the run (default: csjd's own default)",
    )
    parser.add_argument(
        "--ordering-keys",
        type=int,
        default=0,
        metavar="N",
        help="end_to_end and intake: job i carries the ordering key k<i %% N>, so each key's "
        "jobs go one at a time (default 0: no keys); compare runs with and without",
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
    batched = parser.add_argument_group("the batch_intake scenario")
    batched.add_argument(
        "--batch-sizes",
        type=_sizes,
        default=list(BATCH_SIZES),
        help="jobs to a POST /jobs/batch, one measurement for each, comma-separated, each "
        f"at most {MAX_BATCH_JOBS} (default {','.join(str(n) for n in BATCH_SIZES)})",
    )
    batched.add_argument(
        "--batch-concurrency",
        type=int,
        default=BATCH_CONCURRENCY,
        help=f"concurrent connections sending batches (default {BATCH_CONCURRENCY})",
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
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="trace: times the four variants run in turn; medians are reported (default 1)",
    )
    looked = parser.add_argument_group("the dashboard scenario")
    looked.add_argument(
        "--stored",
        type=_sizes,
        default=list(DASHBOARD_STORED),
        help="jobs stored, one measurement for each, comma-separated (default "
        f"{','.join(str(n) for n in DASHBOARD_STORED)})",
    )
    looked.add_argument(
        "--requests",
        type=int,
        default=30,
        help="times each dashboard path is asked, per size (default 30)",
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
    if args.ordering_keys < 0:
        parser.error("--ordering-keys must be 0 (no keys) or more")
    if args.backlog < 1 or args.big_backlog < 1:
        parser.error("--backlog and --big-backlog must be at least 1")
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    if max(args.batch_sizes) > MAX_BATCH_JOBS or args.batch_concurrency < 1:
        parser.error(
            f"--batch-sizes must be at most {MAX_BATCH_JOBS}; --batch-concurrency at least 1"
        )
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
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and (args.split or args.replicas > 1 or args.scenario != "end_to_end"):
        parser.error("--workers applies to end_to_end, alone (not with --split or --replicas)")
    if args.replicas > 1 and args.db != "postgres":
        parser.error("--replicas above 1 needs --db postgres (replicas share one database)")
    if args.replicas > 1 and args.scenario == "outage":
        parser.error("--replicas applies to end_to_end; the outage scenario runs one csjd")
    if urlsplit(args.pg_admin_url).scheme not in ("postgresql", "postgres"):
        parser.error("--pg-admin-url must be a postgresql:// URL")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.delivery_client is not None:
        EVERY_CSJD["CSJD_DELIVERY_CLIENT"] = args.delivery_client
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
