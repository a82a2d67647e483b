"""End to end: the real ``csjd`` command against a real ``csjd serve`` and a real sink."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.testing import Reply, Sink
from tests.cli.conftest import Run
from tests.e2e.gateway import ROOT, GatewayProcess

pytestmark = pytest.mark.slow

TOKEN = "csjd_e2e-operator-token-0123456789"


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(tmp_path, CSJD_API_KEYS=f"ops:{TOKEN}:admin")
    try:
        yield gateway.start()
    finally:
        gateway.stop()


def _cli(gateway: GatewayProcess, token: str | None = TOKEN) -> Callable[..., Run]:
    env = {**os.environ, "CSJD_URL": f"http://127.0.0.1:{gateway.port}", "COLUMNS": "200"}
    env.pop("CSJD_TOKEN", None)
    if token is not None:
        env["CSJD_TOKEN"] = token

    def run(*argv: str) -> Run:
        done = subprocess.run(
            [sys.executable, "-m", "app", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    return run


def test_an_operator_manages_targets_and_jobs_from_the_command_line(
    gateway: GatewayProcess, sink: Sink
) -> None:
    gateway.client.headers["Authorization"] = f"Bearer {TOKEN}"
    csjd = _cli(gateway)

    put = csjd("targets", "put", "billing", "--url", sink.url("/hook"), "--header", "X-T=1")
    assert put.code == 0, put.err
    assert put.out.splitlines()[0] == "created target billing"
    listed = csjd("targets", "list")
    assert listed.code == 0
    row = next(line for line in listed.out.splitlines() if "billing" in line)
    assert sink.url("/hook") in row and "closed" in row

    accepted = gateway.post_job("order-1", "billing", {"n": 1})
    assert accepted.status_code == 202
    job_id = accepted.json()["id"]
    gateway.wait_job(job_id, ("succeeded",))
    jobs = csjd("jobs", "list", "--json")
    assert jobs.code == 0
    assert [(j["id"], j["state"]) for j in jobs.json()["items"]] == [(job_id, "succeeded")]

    sink.answer("/flaky", Reply(status=400))
    assert csjd("targets", "put", "flaky", "--url", sink.url("/flaky")).code == 0
    failing = gateway.post_job("order-2", "flaky", {"n": 2}).json()["id"]
    failed = gateway.wait_job(failing, ("failed",))
    assert failed["failure_reason"] == "permanent_status"
    shown = csjd("jobs", "show", failing)
    assert "permanent_status" in shown.out

    status = csjd("status")
    assert status.code == 0, status.err
    assert status.out.splitlines()[0].endswith(": ready")
    assert any("billing" in line and "closed" in line for line in status.out.splitlines())
    assert status.out.splitlines()[-1] == "2 targets, all healthy"

    sink.answer("/flaky", Reply(status=200))
    retried = csjd("jobs", "retry", "--failed")
    assert retried.code == 0, retried.err
    assert retried.out.strip() == "retried 1 of 1 job"
    gateway.wait_job(failing, ("succeeded",))
    attempts = csjd("jobs", "attempts", failing, "--json").json()
    assert [(a["status_code"], a["outcome"]) for a in attempts] == [
        (400, "permanent"),
        (200, "success"),
    ]

    deleted = csjd("targets", "delete", "billing")
    assert deleted.code == 0, deleted.err
    assert csjd("targets", "show", "billing").err.startswith("csjd: Not found")


def test_without_a_token_the_operator_is_told_to_set_one(
    gateway: GatewayProcess,
) -> None:
    run = _cli(gateway, token=None)("targets", "list")
    assert run.code == 1
    assert "hint: the gateway wants an API token: set CSJD_TOKEN" in run.err
