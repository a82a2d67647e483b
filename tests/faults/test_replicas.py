"""Replicas on one Postgres: clocks a minute apart, and mixed load without lock waits.

Real ``csjd serve`` processes on a private Postgres server whose log names
every lock wait longer than 50 ms and every deadlock; real sinks; clocks
skewed with libfaketime.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.testing import Reply, Sink
from tests.e2e.gateway import GatewayProcess
from tests.faults.conftest import ReplicaFactory
from tests.faults.postgres import PrivatePostgres

pytestmark = pytest.mark.slow

TERMINAL = ("succeeded", "failed", "cancelled")


def _wait_terminal(
    replica: GatewayProcess, job_ids: list[str], timeout: float
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(job_ids):
        for job_id in job_ids:
            if job_id not in done:
                job = replica.job(job_id)
                if job["state"] in TERMINAL:
                    done[job_id] = job
        if len(done) < len(job_ids):
            if time.monotonic() > deadline:
                left = [replica.job(j) for j in job_ids if j not in done]
                stuck = Counter((job["state"], job["target"]) for job in left)
                raise AssertionError(f"{len(left)} jobs never ended: {stuck}")
            time.sleep(0.2)
    return done


def test_replicas_with_clocks_a_minute_apart_send_each_job_once(
    private_postgres: PrivatePostgres, replica_factory: ReplicaFactory, sink: Sink
) -> None:
    """A replica a minute ahead leads maintenance; one a minute behind holds slow
    deliveries. By their own clocks the leader would see the other's leases as
    lapsed long ago and rescue them, and each job would go out twice; by the
    database's clock every lease is live, and each job goes out once."""
    url = private_postgres.migrated_database()
    ahead = replica_factory(url, name="ahead", clock_skew_s=60).start()  # first: it leads
    behind = replica_factory(url, name="behind", clock_skew_s=-60).start()
    sink.answer("/slow", Reply(status=200, delay_s=6))
    behind.put_target("slow", url=sink.url("/slow"), timeout_s=30, max_concurrency=64)
    jobs = [behind.post_job(f"k-{i}", "slow", i).json()["id"] for i in range(12)]
    ended = _wait_terminal(ahead, jobs, timeout=60)
    assert {job["state"] for job in ended.values()} == {"succeeded"}
    assert {job["attempts"] for job in ended.values()} == {1}
    sent = Counter(r.headers["webhook-id"] for r in sink.received("/slow"))
    assert sent == Counter(dict.fromkeys(jobs, 1))
    for replica in (ahead, behind):
        assert "expired_leases_rescued" not in replica.logs()


def test_three_replicas_under_mixed_load_never_wait_on_a_lock_or_deadlock(
    private_postgres: PrivatePostgres, replica_factory: ReplicaFactory, sink: Sink
) -> None:
    """Throttling, a target that trips its breaker, slow answers, cancels, and
    targets created and deleted, over three replicas at once: the server logs no
    lock wait over 50 ms and no deadlock, and every job ends."""
    url = private_postgres.migrated_database()
    replicas = [replica_factory(url, name=f"r{i}").start() for i in range(3)]
    sink.answer("/ok", Reply(status=200))
    sink.answer("/slow", Reply(status=200, delay_s=0.3))
    sink.answer("/fail", Reply(status=500))
    sink.script("/throttle", [Reply(status=429, headers={"Retry-After": "1"})] * 10, Reply())
    admin = replicas[0]
    fast = {"backoff_initial_s": 0.1, "backoff_max_s": 0.5}
    admin.put_target("ok", url=sink.url("/ok"), max_concurrency=64)
    admin.put_target("slow", url=sink.url("/slow"), max_concurrency=32)
    admin.put_target("fail", url=sink.url("/fail"), max_attempts=3, **fast)
    admin.put_target("throttle", url=sink.url("/throttle"), **fast)
    # a disabled target holding a job: deleting it is always refused
    admin.put_target("parked", url=sink.url("/ok"), enabled=False)
    parked = admin.post_job("parked", "parked", 0).json()["id"]
    names = ["ok", "slow", "fail", "throttle"]
    accepted: list[str] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def produce(worker: int) -> None:
        with httpx.Client(timeout=30) as client:
            for i in range(50):
                replica = replicas[(worker + i) % len(replicas)]
                target = names[(worker * 7 + i) % len(names)]
                body: dict[str, Any] = {"target": target, "payload": {"w": worker, "i": i}}
                if target == "fail":
                    # its breaker keeps jobs waiting; they end when they expire
                    body["expires_at"] = datetime.fromtimestamp(time.time() + 10, UTC).isoformat()
                response = client.post(
                    f"{replica.client.base_url}/jobs",
                    json=body,
                    headers={"Idempotency-Key": f"{worker}-{i}"},
                )
                with lock:
                    statuses[response.status_code] += 1
                    if response.status_code == 202:
                        accepted.append(response.json()["id"])
                if i % 10 == 5 and response.status_code == 202:
                    client.post(
                        f"{replicas[i % 3].client.base_url}/jobs/{response.json()['id']}/cancel"
                    )

    def churn_targets() -> None:
        n = 0
        while not stop.is_set():
            replica = replicas[n % len(replicas)]
            replica.put_target(f"spare-{n % 4}", url=sink.url("/ok"))
            gone = replicas[(n + 1) % len(replicas)].client.delete(f"/targets/spare-{n % 4}")
            assert gone.status_code in (204, 404, 409), gone.text
            # a target with unfinished jobs: 409, never a wait
            busy = replica.client.delete("/targets/parked")
            assert busy.status_code == 409, busy.text
            n += 1

    churner = threading.Thread(target=churn_targets)
    churner.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(produce, range(4)))
    finally:
        stop.set()
        churner.join(30)
    assert set(statuses) <= {202}, statuses
    ended = _wait_terminal(admin, accepted, timeout=90)
    assert len(ended) == len(accepted) == 200
    assert admin.job(parked)["state"] == "queued"
    assert private_postgres.lock_waits() == []
    assert private_postgres.deadlocks() == []
    assert private_postgres.stat_deadlocks() == 0
