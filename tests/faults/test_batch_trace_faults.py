"""Batches and trace context through crashes: a batch's jobs, each with its own
trace, survive kill -9 of the gateway that took them, on SQLite (a restart) and on
Postgres (the other replica finishes them), every delivery still in its trace."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from app.testing import Received, Reply, Sink
from tests.e2e.gateway import GatewayProcess
from tests.e2e.test_lifecycle import restart
from tests.faults.conftest import ReplicaFactory
from tests.faults.postgres import PrivatePostgres
from tests.faults.test_replicas import _wait_terminal

pytestmark = pytest.mark.slow

JOBS = 200


def trace_id(i: int) -> str:
    return f"{i + 1:032x}"


def traced_batch(gateway: GatewayProcess, target: str) -> list[str]:
    """One POST /jobs/batch of ``JOBS`` jobs, job ``i`` in trace ``trace_id(i)``."""
    items: list[dict[str, Any]] = [
        {
            "idempotency_key": f"b-{i}",
            "target": target,
            "payload": {"i": i},
            "headers": {"traceparent": f"00-{trace_id(i)}-{i + 1:016x}-01"},
        }
        for i in range(JOBS)
    ]
    response = gateway.client.post("/jobs/batch", json={"jobs": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202] * JOBS
    return [r["job"]["id"] for r in results]


def assert_each_in_its_trace(received: list[Received], ids: list[str]) -> None:
    """Every job was delivered, each request in its own job's trace under a parent id
    that is csjd's own (never the producer's), new for each request."""
    traces: dict[str, set[str]] = defaultdict(set)
    parents: list[str] = []
    for request in received:
        _, trace, parent, _ = request.headers["traceparent"].split("-")
        traces[request.headers["webhook-id"]].add(trace)
        parents.append(parent)
    assert set(traces) == set(ids)
    assert {job_id: traces[job_id] for job_id in ids} == {
        job_id: {trace_id(i)} for i, job_id in enumerate(ids)
    }
    assert len(set(parents)) == len(parents)


def test_a_traced_batch_survives_kill_9_and_a_restart_on_sqlite(tmp_path: Path, sink: Sink) -> None:
    sink.answer("/slow", Reply(delay_s=0.05))
    first = GatewayProcess(tmp_path).start()
    try:
        first.put_target("slow", url=sink.url("/slow"), max_concurrency=20)
        ids = traced_batch(first, "slow")
        sink.wait_for(lambda got: len(got) >= 40)
    finally:
        first.kill9()
    second = restart(first)
    try:
        for job_id in ids:
            second.wait_job(job_id, ("succeeded",), timeout=60)
        assert_each_in_its_trace(sink.received("/slow"), ids)
    finally:
        second.stop()


def test_a_traced_batch_survives_kill_9_of_the_replica_that_took_it(
    private_postgres: PrivatePostgres, replica_factory: ReplicaFactory, sink: Sink
) -> None:
    url = private_postgres.migrated_database()
    taker, other = (replica_factory(url, name=f"r{i}").start() for i in range(2))
    sink.answer("/slow", Reply(delay_s=0.05))
    taker.put_target("slow", url=sink.url("/slow"), max_concurrency=20)
    ids = traced_batch(taker, "slow")
    sink.wait_for(lambda got: len(got) >= 40)
    taker.kill9()  # its leases lapse; the other replica rescues and finishes
    ended = _wait_terminal(other, ids, timeout=120)
    assert {job["state"] for job in ended.values()} == {"succeeded"}
    assert_each_in_its_trace(sink.received("/slow"), ids)
    assert private_postgres.lock_waits() == []
    assert private_postgres.deadlocks() == []
