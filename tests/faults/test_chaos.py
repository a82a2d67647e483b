"""Seeded chaos: faults mixed while jobs flow, then the whole history checked.

On Postgres, two replicas with clocks a minute apart either way take jobs
while the server is stopped for a few seconds and one replica is killed with
``kill -9`` and started again. On SQLite, one gateway is killed and started again while
it takes jobs, then a second process holds the write lock for longer than
SQLite's busy timeout. Targets include one answering binary bytes, one answering
bytes that are not HTTP, and one that hangs. ``Chaos.check`` states what must
hold of the history; afterwards each surviving gateway's open files and
threads are back where they were before the load, and the per-target counts
the dashboard reads are still the jobs' own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from app.testing import Sink
from tests.e2e.gateway import GatewayProcess
from tests.faults.chaos import Chaos
from tests.faults.conftest import ReplicaFactory
from tests.faults.postgres import PrivatePostgres
from tests.faults.sqlite_lock import SqliteWriteLock
from tests.faults.targets import Behaviour, HostileTarget

pytestmark = pytest.mark.slow

SEED = 20261203
PRODUCERS = 4
JOBS_EACH = 30


@pytest.fixture
def chaos(sink: Sink) -> Iterator[Chaos]:
    with (
        HostileTarget(Behaviour.BINARY, status=200, seed=SEED) as binary,
        HostileTarget(Behaviour.GARBAGE, seed=SEED) as garbage,
        HostileTarget(Behaviour.HANG) as hung,
    ):
        yield Chaos(SEED, sink, binary, garbage, hung)


class Resources:
    """Open files and threads of a gateway process, against a baseline."""

    def __init__(self, gateway: GatewayProcess) -> None:
        assert gateway.proc is not None
        self.process = psutil.Process(gateway.proc.pid)
        self.baseline = self.now()

    def now(self) -> tuple[int, int]:
        return self.process.num_fds(), self.process.num_threads()

    def back_to_baseline(self, timeout: float = 30) -> None:
        """Idle connections close after their keep-alive; wait for that, not for ever."""
        fds, threads = self.baseline
        deadline = time.monotonic() + timeout
        while True:
            now_fds, now_threads = self.now()
            if now_fds <= fds + 2 and now_threads <= threads:
                return
            assert time.monotonic() < deadline, (
                f"open files {now_fds} (baseline {fds}), threads {now_threads} (baseline {threads})"
            )
            time.sleep(0.2)


def _warm_up(chaos: Chaos, gateway: GatewayProcess) -> None:
    """Jobs to the targets that answer, and reads in parallel, so that the bounded
    pools (database connections, reader threads) are full before the baseline."""
    for target in ("ok", "binary"):
        job = gateway.post_job(f"warm-{gateway.port}-{target}", target, 0).json()
        gateway.wait_job(job["id"], ("succeeded",), timeout=20)
        chaos.history.accepted[job["id"]] = target
    with ThreadPoolExecutor(16) as pool:
        url = f"{gateway.client.base_url}/jobs?limit=100"
        assert set(pool.map(lambda _: httpx.get(url).status_code, range(64))) == {200}


def _produce(chaos: Chaos, up: list[GatewayProcess], phase: int) -> threading.Thread:
    """Producers sending jobs to whichever gateways are in ``up`` at each moment."""

    def run() -> None:
        with ThreadPoolExecutor(PRODUCERS) as pool:
            workers = range(phase * PRODUCERS, (phase + 1) * PRODUCERS)
            list(pool.map(lambda w: chaos.produce(lambda: list(up), w, JOBS_EACH), workers))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _join(producers: threading.Thread) -> None:
    producers.join(180)
    assert not producers.is_alive(), "the producers never finished"


def _kill_and_restart(gateway: GatewayProcess, up: list[GatewayProcess]) -> None:
    up.remove(gateway)
    gateway.kill9()
    gateway.start()
    up.append(gateway)


def test_chaos_on_postgres(
    chaos: Chaos, private_postgres: PrivatePostgres, replica_factory: ReplicaFactory
) -> None:
    url = private_postgres.migrated_database()
    steady = replica_factory(url, name="steady", clock_skew_s=60).start()
    doomed = replica_factory(url, name="doomed", clock_skew_s=-60).start()
    chaos.register(steady)
    _warm_up(chaos, steady)
    resources = Resources(steady)
    up = [steady, doomed]
    producers = _produce(chaos, up, phase=0)
    # the seeded schedule: an outage, then a replica killed and started again
    time.sleep(chaos.rng.uniform(1.0, 3.0))
    with private_postgres.down():
        # down until producers have met the outage past the store's retries: a 503
        deadline = time.monotonic() + 20
        while chaos.history.statuses[503] == 0:
            assert time.monotonic() < deadline, "no producer met the outage"
            time.sleep(0.05)
    time.sleep(chaos.rng.uniform(1.0, 3.0))
    _kill_and_restart(doomed, up)
    _join(producers)
    chaos.check(steady, faults=2)
    chaos.check_counts(steady, [steady, doomed])
    assert chaos.history.statuses[503] > 0  # the outage was met, and answered 503
    resources.back_to_baseline()


def test_chaos_on_sqlite(chaos: Chaos, replica_factory: ReplicaFactory, tmp_path: Path) -> None:
    database = tmp_path / "chaos.db"
    gateway = replica_factory(f"sqlite+aiosqlite:///{database}", name="only").start()
    chaos.register(gateway)
    up = [gateway]
    producers = _produce(chaos, up, phase=0)
    time.sleep(chaos.rng.uniform(1.0, 3.0))
    _kill_and_restart(gateway, up)
    _join(producers)
    # the process that lives on: its baseline, then the second fault under load
    _warm_up(chaos, gateway)
    resources = Resources(gateway)
    producers = _produce(chaos, up, phase=1)
    time.sleep(chaos.rng.uniform(1.0, 3.0))
    # another process holds the write lock past SQLite's busy timeout and the retries:
    # the store runs the transaction again or answers 503; nothing is lost
    with SqliteWriteLock(database, seconds=7) as holder:
        assert holder.wait(30) == 0  # it lets go by itself
    _join(producers)
    chaos.check(gateway, faults=2)
    chaos.check_counts(gateway, [gateway])
    # the lock was met: SQLITE_BUSY after the busy timeout, run again or a 503
    logs = gateway.logs()
    assert "transient_database_error" in logs or "database_unavailable" in logs
    resources.back_to_baseline()
