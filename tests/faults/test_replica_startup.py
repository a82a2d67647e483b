"""Replicas that start at the same moment on one Postgres database all come up, quietly.

Each replica migrates the database and upserts the targets file when it
starts. Started together they used to race: on alembic's version table (all
but one exited) and on the targets' primary key (an ``IntegrityError`` whose
traceback carried the target's secret and header values). A transaction held
open by the test is the starting gate: every replica queues behind it at the
very statement where the race was, and all are let go at once.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
import yaml

from app.storage.migrate import upgrade
from app.testing import Sink
from tests.e2e.gateway import GatewayProcess
from tests.faults.conftest import ReplicaFactory
from tests.faults.postgres import PrivatePostgres

pytestmark = pytest.mark.slow

REPLICAS = 4
SECRET = "whsec_" + base64.b64encode(b"replicas-start-together-secret!!").decode()
HEADER_VALUE = "Bearer header-value-of-the-replica-test"
TARGETS = ("billing", "search", "mail", "audit")


@pytest.fixture
def targets_file(tmp_path: Path, sink: Sink) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(
        yaml.safe_dump(
            [
                {
                    "name": name,
                    "url": sink.url(f"/{name}"),
                    "secret": SECRET,
                    "headers": {"authorization": HEADER_VALUE},
                }
                for name in TARGETS
            ]
        )
    )
    return path


@pytest.fixture
def replicas(
    replica_factory: ReplicaFactory, private_postgres: PrivatePostgres, targets_file: Path
) -> tuple[str, list[GatewayProcess]]:
    """A fresh, empty database and replicas configured for it, not started."""
    url = private_postgres.create_database("fresh")
    return (
        url,
        [
            replica_factory(url, name=f"r{i}", CSJD_TARGETS_FILE=str(targets_file))
            for i in range(REPLICAS)
        ],
    )


def _release_when_all_wait(pg: PrivatePostgres, database: str, group: list[GatewayProcess]) -> None:
    """Return once every replica waits behind the gate (or fail with the logs of one
    that gave up first)."""
    deadline = time.monotonic() + 90
    while pg.lock_waiters(database) < len(group):
        for gateway in group:
            assert gateway.proc is not None
            if gateway.proc.poll() is not None:
                pytest.fail(f"a replica exited before the gate opened:\n{gateway.logs()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {pg.lock_waiters(database)} replicas reached the gate")
        time.sleep(0.05)


def _assert_all_ready_and_quiet(pg: PrivatePostgres, group: list[GatewayProcess]) -> None:
    for gateway in group:
        gateway.wait_ready(timeout=60)
    for gateway in group:
        log = gateway.logs()
        assert SECRET not in log and SECRET.removeprefix("whsec_") not in log
        assert HEADER_VALUE not in log
    names = [t["name"] for t in group[-1].client.get("/targets").json()]
    assert sorted(names) == sorted(TARGETS)
    # they queued (the gate saw to that), and none was taken for a deadlock victim
    assert pg.deadlocks() == []


def test_replicas_migrating_one_fresh_database_together_all_start(
    private_postgres: PrivatePostgres, replicas: tuple[str, list[GatewayProcess]]
) -> None:
    url, group = replicas
    database = url.rsplit("/", 1)[1]
    # an uncommitted alembic_version table: every replica's migration waits on it
    gate = "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
    with private_postgres.holding(gate, database=database):
        for gateway in group:
            gateway.start(wait=False)
        _release_when_all_wait(private_postgres, database, group)
    _assert_all_ready_and_quiet(private_postgres, group)
    versions = private_postgres.query("SELECT version_num FROM alembic_version", database=database)
    assert len(versions) == 1


def test_replicas_loading_one_targets_file_together_all_start_and_log_no_secret(
    private_postgres: PrivatePostgres, replicas: tuple[str, list[GatewayProcess]]
) -> None:
    url, group = replicas
    database = url.rsplit("/", 1)[1]
    upgrade(url)
    # an uncommitted row of the first target: every replica's upsert of it waits on it
    gate = (
        "INSERT INTO targets (name, url, timeout_s, max_concurrency, max_attempts, "
        "backoff_initial_s, backoff_max_s, max_retry_duration_s, headers, enabled, "
        "created_at, updated_at) "
        f"VALUES ('{TARGETS[0]}', 'http://127.0.0.1:9/', 10, 1, 1, 1, 1, 1, '{{}}', true, 0, 0)"
    )
    with private_postgres.holding(gate, database=database):
        for gateway in group:
            gateway.start(wait=False)
        _release_when_all_wait(private_postgres, database, group)
    _assert_all_ready_and_quiet(private_postgres, group)
