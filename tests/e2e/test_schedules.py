"""Schedules end to end: real ``csjd serve`` processes, a real sink, SQLite and Postgres."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.testing import Sink
from tests.e2e.gateway import GatewayProcess
from tests.pg import PostgresDatabases

pytestmark = pytest.mark.slow


def fire_time(job: dict[str, Any]) -> float:
    """The fire time a schedule's job was made for, from its idempotency key."""
    _, _, when = job["idempotency_key"].split(":", 2)  # schedule:<name>:<fire time>
    return datetime.fromisoformat(when).timestamp()


def schedule_jobs(gateway: GatewayProcess, name: str) -> list[dict[str, Any]]:
    page = gateway.client.get("/jobs", params={"caller": f"schedule:{name}", "limit": 500})
    assert page.status_code == 200, page.text
    return list(page.json()["items"])


def test_a_schedule_fires_jobs_to_a_real_target(gateway: GatewayProcess, sink: Sink) -> None:
    gateway.put_target("reports", url=sink.url("/reports"))
    put = gateway.client.put(
        "/schedules/tick",
        json={
            "cron": "*/2 * * * * *",  # every two seconds: seconds come first in six fields
            "timezone": "Europe/Paris",
            "target": "reports",
            "payload": {"report": "daily"},
            "headers": {"x-report": "daily"},
        },
    )
    assert put.status_code == 201, put.text
    got = sink.wait_for(lambda got: len(got) >= 2, timeout=15)
    assert gateway.client.delete("/schedules/tick").status_code == 204
    first = got[0]
    assert first.body == b'{"report":"daily"}'
    assert first.headers["x-report"] == "daily"
    job = gateway.job(first.headers["webhook-id"])
    assert job["caller"] == "schedule:tick"
    assert job["idempotency_key"].startswith("schedule:tick:")
    assert job["idempotency_key"].endswith("Z")
    # sent once its fire time came, promptly
    assert fire_time(job) <= first.at < fire_time(job) + 5
    sent = Counter(r.headers["webhook-id"] for r in sink.received("/reports"))
    assert set(sent.values()) == {1}


def test_fire_times_missed_while_no_gateway_ran_make_one_job(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    gateway = gateway_factory().start()
    gateway.put_target("reports", url=sink.url("/reports"))
    yearly = {"cron": "0 0 1 1 *", "target": "reports", "payload": {"n": 1}}
    assert gateway.client.put("/schedules/new-year", json=yearly).status_code == 201
    gateway.stop()
    # as if it had been down since three new years ago: three fire times passed
    this_year = datetime.now(UTC).year
    three_ago = datetime(this_year - 2, 1, 1, tzinfo=UTC).timestamp()
    with sqlite3.connect(gateway.db) as db:
        db.execute("UPDATE schedules SET next_run_at = ? WHERE name = 'new-year'", (three_ago,))
    again = gateway_factory().start()
    # it fires once it leads maintenance: at once, or when the stopped gateway's
    # lease on the duty lapses (15 s)
    got = sink.wait_for(lambda got: len(got) >= 1, timeout=30)
    [job] = schedule_jobs(again, "new-year")
    assert job["idempotency_key"] == f"schedule:new-year:{this_year}-01-01T00:00:00Z"
    assert [r.headers["webhook-id"] for r in got] == [job["id"]]
    schedule = again.client.get("/schedules/new-year").json()
    assert schedule["last_job_id"] == job["id"]
    assert schedule["last_run_at"] == f"{this_year}-01-01T00:00:00.000Z"
    assert schedule["next_run_at"] == f"{this_year + 1}-01-01T00:00:00.000Z"


@pytest.fixture
def pg_url(postgres: PostgresDatabases) -> Iterator[str]:
    url = postgres.empty()  # the first gateway migrates it
    yield url
    postgres.drop(url)


def test_two_replicas_fire_once_per_fire_time_by_the_databases_clock(
    tmp_path: Path, pg_url: str, sink: Sink
) -> None:
    """The replica started first leads, and its wall clock runs 45 s ahead: by its
    own clock it would fire each time 45 s early. Each fire time makes one job,
    sent once, when the fire time comes."""
    replicas = []
    for name, skew in (("ahead", 45), ("true", 0)):
        workdir = tmp_path / name
        workdir.mkdir()
        replica = GatewayProcess(workdir, database_url=pg_url, clock_skew_s=skew)
        replicas.append(replica.start())
    ahead, true = replicas
    try:
        true.put_target("reports", url=sink.url("/reports"))
        every_2_s = {"cron": "*/2 * * * * *", "target": "reports", "payload": {"n": 1}}
        assert true.client.put("/schedules/tick", json=every_2_s).status_code == 201
        sink.wait_for(lambda got: len(got) >= 5, timeout=30)
        assert ahead.client.delete("/schedules/tick").status_code == 204
        jobs = schedule_jobs(true, "tick")
        for job in jobs:
            true.wait_job(job["id"], ("succeeded",))
        got = sink.received("/reports")
        sent = Counter(r.headers["webhook-id"] for r in got)
        assert sent == Counter({job["id"]: 1 for job in jobs})  # each job sent once
        times = sorted(fire_time(job) for job in jobs)
        assert len(set(times)) == len(times) >= 5  # one job per fire time
        assert all(t % 2 == 0 for t in times)
        by_id = {job["id"]: job for job in jobs}
        for received in got:
            fired = fire_time(by_id[received.headers["webhook-id"]])
            assert fired - 1 <= received.at < fired + 10, "fired by a replica's own clock"
        logs = ahead.logs() + true.logs()
        assert logs.count('"schedule_fired"') == len(jobs)
    finally:
        for replica in replicas:
            replica.stop()
