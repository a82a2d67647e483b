"""Ordering keys and completion callbacks over three Postgres replicas: one line per
key whoever accepts, claims or finishes its jobs, one callback per ending, one
replica killed midway, and no lock waits."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.testing import Reply, Sink
from tests.e2e.test_callbacks import endings
from tests.e2e.test_ordering import assert_one_at_a_time, sent_in_order
from tests.faults.conftest import ReplicaFactory
from tests.faults.postgres import PrivatePostgres
from tests.faults.test_replicas import _wait_terminal

pytestmark = pytest.mark.slow

KEYS = ("k0", "k1", "k2", "k3", "k4", "k5")
PER_KEY = 12


def test_three_replicas_keep_each_key_in_order_through_retries_and_a_kill(
    private_postgres: PrivatePostgres, replica_factory: ReplicaFactory, sink: Sink
) -> None:
    url = private_postgres.migrated_database()
    replicas = [replica_factory(url, name=f"r{i}").start() for i in range(3)]
    # a fifth of the requests fail and are retried; answers take a little while
    sink.script(
        "/ordered",
        [Reply(status=503, delay_s=0.02)] + [Reply(delay_s=0.02)] * 4,
        then=Reply(delay_s=0.02),
    )
    sink.answer("/free", Reply())
    sink.answer("/hooks", Reply())
    replicas[0].put_target(
        "ordered",
        url=sink.url("/ordered"),
        max_concurrency=32,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )
    replicas[0].put_target("free", url=sink.url("/free"), max_concurrency=32)
    replicas[0].put_target("hooks", url=sink.url("/hooks"), max_concurrency=32)
    accepted: list[str] = []
    lock = threading.Lock()

    def produce(key_index: int) -> None:
        key = KEYS[key_index]
        with httpx.Client(timeout=30) as client:
            for n in range(PER_KEY):
                # each job of a key through another replica than the one before
                replica = replicas[(key_index + n) % 3]
                keyed = {"ordering_key": key, "callback_target": "hooks"}
                for target, ordering in (("ordered", keyed), ("free", {})):
                    response = client.post(
                        f"{replica.client.base_url}/jobs",
                        json={"target": target, "payload": {"key": key, "n": n}, **ordering},
                        headers={"Idempotency-Key": f"{target}-{key}-{n}"},
                    )
                    assert response.status_code == 202, response.text
                    with lock:
                        accepted.append(response.json()["id"])

    with ThreadPoolExecutor(len(KEYS)) as pool:
        list(pool.map(produce, range(len(KEYS))))
    sink.wait_for(lambda got: len(got) >= 20, timeout=30)
    replicas[2].kill9()  # its leases lapse; the others rescue its attempts

    ended = _wait_terminal(replicas[0], accepted, timeout=120)
    assert {job["state"] for job in ended.values()} == {"succeeded"}
    assert_one_at_a_time(sent_in_order(sink.received("/ordered")), PER_KEY)
    # each keyed job called back once, whichever replica ended it
    keyed_ids = {job_id for job_id, job in ended.items() if job["target"] == "ordered"}
    sink.wait_for(lambda _: len(endings(sink.received("/hooks"))) == len(keyed_ids), timeout=60)
    assert endings(sink.received("/hooks")) == dict.fromkeys(keyed_ids, "job.succeeded")
    stored = [replicas[0].job(ended[j]["callback_job_id"]) for j in keyed_ids]
    assert sorted(job["idempotency_key"] for job in stored) == sorted(
        f"callback:{j}:1" for j in keyed_ids
    )
    assert private_postgres.lock_waits() == []
    assert private_postgres.deadlocks() == []
