"""End to end: the real ``csjd`` command against a real ``csjd serve`` and a real sink."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.console import jobs as console_jobs
from app.console.client import Api
from app.console.output import Output
from app.testing import Reply, Sink
from tests.cli.conftest import Csjd, Run
from tests.e2e.gateway import ROOT, GatewayProcess

pytestmark = pytest.mark.slow

TOKEN = "csjd_e2e-operator-token-0123456789"
PRODUCER_TOKEN = "csjd_e2e-producer-token-0123456789"


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    keys = f"ops:{TOKEN}:admin,shop:{PRODUCER_TOKEN}:producer"
    gateway = GatewayProcess(tmp_path, CSJD_API_KEYS=keys)
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
    retried = csjd("jobs", "retry", "--failed", "--yes")
    assert retried.code == 0, retried.err
    assert retried.out.strip() == "retried 1 of 1 job"
    gateway.wait_job(failing, ("succeeded",))
    attempts = csjd("jobs", "attempts", failing, "--json").json()
    assert [(a["status_code"], a["outcome"]) for a in attempts] == [
        (400, "permanent"),
        (200, "success"),
    ]

    # disabling and enabling again changes nothing else: the secret still signs
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signed = csjd("targets", "put", "signed", "--url", sink.url("/signed"), "--secret", secret)
    assert signed.code == 0, signed.err
    disabled = csjd("targets", "disable", "signed")
    assert (disabled.code, disabled.out.strip()) == (0, "target signed disabled")
    assert csjd("targets", "show", "signed", "--json").json()["enabled"] is False
    enabled = csjd("targets", "enable", "signed")
    assert (enabled.code, enabled.out.strip()) == (0, "target signed enabled")
    shown_target = csjd("targets", "show", "signed", "--json").json()
    assert (shown_target["enabled"], shown_target["secret"]) == (True, "********")
    signed_job = gateway.post_job("order-3", "signed", {"n": 3}).json()["id"]
    gateway.wait_job(signed_job, ("succeeded",))
    assert sink.received("/signed")[0].headers["webhook-signature"].startswith("v1,")
    assert csjd("targets", "disable", "nowhere").code == 1

    deleted = csjd("targets", "delete", "billing")
    assert deleted.code == 0, deleted.err
    assert csjd("targets", "show", "billing").err.startswith("csjd: Not found")


def test_without_a_token_the_operator_is_told_to_set_one(
    gateway: GatewayProcess,
) -> None:
    run = _cli(gateway, token=None)("targets", "list")
    assert run.code == 1
    assert "hint: the gateway wants an API token: set CSJD_TOKEN" in run.err


def test_a_producer_sees_readiness_and_its_own_jobs_in_status(
    gateway: GatewayProcess, sink: Sink
) -> None:
    gateway.client.headers["Authorization"] = f"Bearer {TOKEN}"
    sink.answer("/refuses", Reply(status=400))
    gateway.put_target("refuses", url=sink.url("/refuses"))
    gateway.put_target("later", url=sink.url("/later"))
    producer = {"Authorization": f"Bearer {PRODUCER_TOKEN}"}

    def post(key: str, target: str, **fields: object) -> str:
        body = {"target": target, "payload": {}, **fields}
        answer = gateway.client.post(
            "/jobs", json=body, headers={**producer, "Idempotency-Key": key}
        )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    post("p-1", "later", delay_s=3600)
    post("p-2", "later", delay_s=3600)
    refused = post("p-3", "refuses")
    deadline = time.monotonic() + 20
    while gateway.client.get(f"/jobs/{refused}", headers=producer).json()["state"] != "failed":
        assert time.monotonic() < deadline, "the refused job never failed"
        time.sleep(0.02)
    # the admin's own scheduled job is not the producer's to count
    assert gateway.post_job("a-1", "later", {}, delay_s=3600).status_code == 202

    run = _cli(gateway, token=PRODUCER_TOKEN)("status")
    assert (run.code, run.err) == (0, "")
    blocks = run.out.split("\n\n")
    assert blocks[0].endswith(": ready")
    assert blocks[1].splitlines() == [
        "scheduled\tqueued\trunning\tretrying\tfailed",
        "2\t0\t0\t0\t1",
    ]
    assert "need an admin key" in blocks[2]
    assert _cli(gateway, token=PRODUCER_TOKEN)("targets", "list").code == 1


def test_an_operator_finds_inspects_and_bulk_retries_real_failures(
    gateway: GatewayProcess, sink: Sink, csjd: Csjd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer's jobs fail against a sink answering 500; an admin finds them with
    filters, reads one's page, is refused without --yes, dry-runs, then retries them
    all while another operator retries one of them and one's target has been deleted."""
    gateway.client.headers["Authorization"] = f"Bearer {TOKEN}"
    env = {"CSJD_URL": f"http://127.0.0.1:{gateway.port}", "CSJD_TOKEN": TOKEN}

    def run(*argv: str) -> Run:
        return csjd(*argv, env=env)

    down = Reply(status=500, headers={"Content-Type": "text/plain"}, body=b"database is down")
    sink.answer("/down", down)
    sink.answer("/old", down)
    gateway.put_target("down", url=sink.url("/down"), max_attempts=1)
    gateway.put_target("old", url=sink.url("/old"), max_attempts=1)
    producer = {"Authorization": f"Bearer {PRODUCER_TOKEN}"}

    def post(key: str, target: str) -> str:
        answer = gateway.client.post(
            "/jobs",
            json={
                "target": target,
                "payload": {"order": key, "lines": [1, 2]},
                "headers": {"X-Tenant": "acme"},
            },
            headers={**producer, "Idempotency-Key": key},
        )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    down_ids = [post(f"order-{n}", "down") for n in range(3)]
    old_id = post("order-old", "old")
    for job_id in (*down_ids, old_id):
        gateway.wait_job(job_id, ("failed",))
    assert gateway.client.delete("/targets/old").status_code == 204  # its job stays, failed

    # an admin finds the producer's failures by caller, target and time, and counts them
    listed = run("jobs", "list", "--state", "failed", "--caller", "shop", "--since", "10m")
    assert (listed.code, listed.err) == (0, "")
    assert sorted(row[0] for row in listed.rows()[1:]) == sorted([*down_ids, old_id])
    assert run("jobs", "count", "--state", "failed", "--target", "down").out == "3\n"
    assert run("jobs", "count", "--state", "failed", "--until", "1h").out == "0\n"
    refused = run("jobs", "list", "--cursor", "bogus")
    assert (refused.code, refused.err) == (
        1,
        "csjd: Bad request: the cursor is not one this server gave out\n",
    )
    unknown = run("jobs", "show", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
    assert (unknown.code, unknown.out) == (1, "")
    assert unknown.err == "csjd: Not found: no job '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b'\n"

    # a failed job's page, through a real pipe: plain text, every block
    page = _cli(gateway)("jobs", "show", down_ids[0])
    assert (page.code, page.err) == (0, "")
    assert "\x1b" not in page.out
    fields, payload, headers, attempts, story = page.out.rstrip("\n").split("\n\n")
    assert "caller\tshop" in fields.splitlines()
    assert "failure_reason\tattempts_exhausted" in fields.splitlines()
    assert payload.splitlines()[:3] == ["payload", "{", '  "order": "order-0",']
    assert headers.splitlines() == ["header\tvalue", "X-Tenant\tacme"]
    first = attempts.splitlines()[1].split("\t")
    assert first[3:] == ["500", "retryable", "HTTP 500", "text/plain", "16", "database is down"]
    assert story.splitlines()[-1].split("\t")[1:] == ["failed", "attempts_exhausted"]

    # no terminal to confirm on: refused; a dry run shows them; neither retries any
    sent = len(sink.received())
    asked = run("jobs", "retry", "--failed")
    assert asked.code == 2 and "4 jobs match state=failed; nobody here to confirm" in asked.err
    dry = run("jobs", "retry", "--failed", "--dry-run")
    assert dry.code == 0
    assert dry.out.splitlines()[0] == "4 jobs match state=failed; a dry run retries none"
    assert len(dry.out.split("\n\n")[1].splitlines()) == 1 + 4
    assert run("jobs", "count", "--state", "failed").out == "4\n"
    assert len(sink.received()) == sent

    # retried jobs wait, queued, while their target is disabled; meanwhile another
    # operator retries one of them after csjd listed it, so csjd's own retry is a 409
    assert run("targets", "disable", "down").code == 0
    every = console_jobs._retry_each

    def another_operator_first(api: Api, output: Output, ids: list[str], *, bulk: bool) -> Any:
        assert gateway.client.post(f"/jobs/{down_ids[0]}/retry").status_code == 202
        return every(api, output, ids, bulk=bulk)

    monkeypatch.setattr(console_jobs, "_retry_each", another_operator_first)
    retried = run("jobs", "retry", "--failed", "--yes")
    assert retried.code == 1  # the job whose target was deleted could not be retried
    assert retried.out == (
        "retried 2 of 4 jobs; 1 already changed (409); 1 could not be retried (see below)\n"
    )
    assert retried.err.splitlines() == [
        "4 jobs match state=failed",
        f"{old_id}: Conflict: the job's target 'old' no longer exists",
    ]
    assert run("jobs", "count", "--state", "queued", "--target", "down").out == "3\n"
    held = run("jobs", "show", down_ids[1])
    assert "held_by\tdisabled: the target is disabled" in held.out.splitlines()
    assert held.out.splitlines()[-1].split("\t")[1:] == [
        "queued, due",
        "held: the target is disabled",
    ]

    # enabled again and answering: sent again, their history kept
    sink.answer("/down", Reply(status=200))
    assert run("targets", "enable", "down").code == 0
    for job_id in down_ids:
        gateway.wait_job(job_id, ("succeeded",))
    shown = run("jobs", "show", down_ids[2], "--json").json()
    assert shown["state"] == "succeeded"
    assert [a["status_code"] for a in shown["attempt_list"]] == [500, 200]


def test_an_operator_schedules_jobs_from_the_command_line(
    gateway: GatewayProcess, sink: Sink
) -> None:
    csjd = _cli(gateway)
    assert csjd("targets", "put", "reports", "--url", sink.url("/reports")).code == 0
    put = csjd(
        "schedules",
        "put",
        "tick",
        "--cron",
        "*/2 * * * * *",
        "--target",
        "reports",
        "--payload",
        '{"report": "daily"}',
    )
    assert put.code == 0, put.err
    assert put.out.splitlines()[0] == "created schedule tick"
    got = sink.wait_for(lambda got: len(got) >= 1, timeout=15)
    assert got[0].body == b'{"report":"daily"}'
    listed = csjd("schedules", "list")
    assert listed.code == 0, listed.err
    row = next(line.split("\t") for line in listed.out.splitlines() if line.startswith("tick"))
    assert row[:5] == ["tick", "*/2 * * * * *", "UTC", "reports", "yes"]
    shown = csjd("schedules", "show", "tick", "--json").json()
    assert shown["last_job_id"] is not None
    refused = csjd("schedules", "put", "bad", "--cron", "61 * * * *", "--target", "reports")
    assert refused.code == 1
    assert "bad minute" in refused.err
    deleted = csjd("schedules", "delete", "tick")
    assert (deleted.code, deleted.out.strip()) == (0, "deleted schedule tick")
    assert csjd("schedules", "show", "tick").err.startswith("csjd: Not found")
