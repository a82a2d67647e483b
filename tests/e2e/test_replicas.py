"""Chaos on Postgres: several gateways on one database, a killed replica, a restarted server."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.testing import Reply, Sink
from tests.e2e.gateway import GatewayProcess
from tests.needs import missing
from tests.pg import PostgresDatabases

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_url(postgres: PostgresDatabases) -> Iterator[str]:
    url = postgres.empty()  # the first gateway migrates it
    yield url
    postgres.drop(url)


def replica(tmp_path: Path, pg_url: str, name: str, **env: str) -> GatewayProcess:
    workdir = tmp_path / name
    workdir.mkdir(exist_ok=True)
    return GatewayProcess(workdir, CSJD_DATABASE_URL=pg_url, **env)


def test_fifty_identical_posts_over_two_replicas_make_one_job(
    tmp_path: Path, pg_url: str, sink: Sink
) -> None:
    a = replica(tmp_path, pg_url, "a").start()
    b = replica(tmp_path, pg_url, "b").start()
    try:
        a.put_target("t", url=sink.url("/hook"))

        def post(i: int) -> httpx.Response:
            gateway = (a, b)[i % 2]
            with httpx.Client(base_url=gateway.client.base_url) as c:
                return c.post(
                    "/jobs", json={"target": "t", "payload": 1}, headers={"Idempotency-Key": "same"}
                )

        results: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda i=i: results.append(post(i))) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {r.status_code for r in results} == {202}
        assert len({r.json()["id"] for r in results}) == 1
        job_id = results[0].json()["id"]
        b.wait_job(job_id, ("succeeded",))
        assert len(sink.received("/hook")) == 1
    finally:
        a.stop()
        b.stop()


def test_a_killed_replica_loses_nothing(tmp_path: Path, pg_url: str, sink: Sink) -> None:
    sink.answer("/hook", Reply(delay_s=0.2))
    a = replica(tmp_path, pg_url, "a").start()
    b = replica(tmp_path, pg_url, "b").start()
    try:
        a.put_target("t", url=sink.url("/hook"), max_concurrency=40)
        ids = [(a, b)[i % 2].post_job(f"k{i}", "t", i).json()["id"] for i in range(500)]
        sink.wait_for(lambda got: len(got) >= 150, timeout=60)
        a.kill9()
        in_flight = len(
            b.client.get("/jobs", params={"state": "running", "limit": 500}).json()["items"]
        )
        for job_id in ids:
            b.wait_job(job_id, ("succeeded",), timeout=120)
        got = sink.received("/hook")
        assert {r.headers["webhook-id"] for r in got} == set(ids)
        duplicates = len(got) - len(ids)
        assert duplicates <= in_flight, f"{duplicates} repeats, {in_flight} were in flight"
        print(f"replica killed with {in_flight} in flight: {duplicates} delivered twice")
    finally:
        a.stop()  # already dead: closes its client
        b.stop()


def _pg_cluster(action: str) -> None:
    version = os.listdir("/etc/postgresql")[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        timeout=60,
    )


# the machine's own cluster goes down for a while: every other test that uses it
# would fail meanwhile, so this one runs after the parallel part, by itself
@pytest.mark.alone
def test_a_postgres_restart_is_survived(tmp_path: Path, pg_url: str, sink: Sink) -> None:
    if not os.path.isdir("/etc/postgresql"):
        missing(
            "no local Postgres cluster to restart (/etc/postgresql, pg_ctlcluster)",
            in_ci="the Postgres restart test must run",
        )
    gateway = replica(tmp_path, pg_url, "a").start()
    accepted: list[str] = []
    statuses: list[int] = []
    try:
        gateway.put_target("t", url=sink.url("/hook"))
        for i in range(20):
            accepted.append(gateway.post_job(f"before-{i}", "t", i).json()["id"])
        _pg_cluster("stop")
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (503 in statuses and len(statuses) > 3):
                r = gateway.post_job(f"down-{len(statuses)}", "t", 0)
                statuses.append(r.status_code)
                if r.status_code == 202:
                    accepted.append(r.json()["id"])
                else:
                    assert r.status_code == 503, r.text
                    assert "retry-after" in r.headers
            ready = gateway.client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] != "ok"
        finally:
            _pg_cluster("start")
        deadline = time.monotonic() + 60
        while gateway.client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the gateway never recovered"
            time.sleep(0.2)
        for i in range(20):
            accepted.append(gateway.post_job(f"after-{i}", "t", i).json()["id"])
        for job_id in accepted:
            gateway.wait_job(job_id, ("succeeded",), timeout=60)
        assert 503 in statuses
    finally:
        gateway.stop()
