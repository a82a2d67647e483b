"""End to end: a real ``csjd serve`` process delivering to a real local sink."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.testing import Reply, Sink
from tests.e2e.gateway import ROOT, GatewayProcess

pytestmark = pytest.mark.slow

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_job_is_delivered_with_the_exact_headers(gateway: GatewayProcess, sink: Sink) -> None:
    gateway.put_target(
        "billing", url=sink.url("/hook"), secret=SECRET, headers={"X-Tenant": "acme"}
    )
    accepted = gateway.post_job(
        "order-1", "billing", {"amount": 42, "items": ["a", "é"]}, headers={"X-Trace": "t-1"}
    )
    assert accepted.status_code == 202
    job = accepted.json()
    done = gateway.wait_job(job["id"], ("succeeded",))
    assert done["attempts"] == 1 and done["last_status_code"] == 200

    got = sink.received("/hook")
    assert len(got) == 1
    request = got[0]
    assert (
        request.body
        == json.dumps(
            {"amount": 42, "items": ["a", "é"]}, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )
    h = request.headers
    assert h["content-type"] == "application/json"
    assert h["user-agent"] == "csjd/0.1.0"
    assert h["webhook-id"] == job["id"] == h["idempotency-key"]
    assert abs(int(h["webhook-timestamp"]) - time.time()) < 60
    assert h["csjd-attempt"] == "1"
    assert h["x-tenant"] == "acme" and h["x-trace"] == "t-1"
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert h["webhook-signature"] == f"v1,{expected}"


def test_replays_and_concurrent_duplicates_make_one_job(
    gateway: GatewayProcess, sink: Sink
) -> None:
    gateway.put_target("billing", url=sink.url("/hook"))

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=gateway.client.base_url) as c:
            return c.post(
                "/jobs",
                json={"target": "billing", "payload": {"n": 1}},
                headers={"Idempotency-Key": "dup"},
            )

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, range(50)))
    assert {r.status_code for r in responses} == {202}
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    job_id = ids.pop()
    gateway.wait_job(job_id, ("succeeded",))
    replay = gateway.client.post(
        "/jobs",
        json={"target": "billing", "payload": {"n": 1}},
        headers={"Idempotency-Key": '"dup"'},
    )
    assert replay.status_code == 202
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["location"] == f"/jobs/{job_id}"
    assert replay.json()["state"] == "succeeded"
    assert len(sink.received("/hook")) == 1


def test_retries_until_the_target_recovers(gateway: GatewayProcess, sink: Sink) -> None:
    sink.script("/flaky", [Reply(status=500), Reply(status=503), Reply(status=200)])
    gateway.put_target("flaky", url=sink.url("/flaky"), backoff_initial_s=0.1, backoff_max_s=0.2)
    job = gateway.post_job("k", "flaky", {"x": 1}).json()
    done = gateway.wait_job(job["id"], ("succeeded",))
    assert done["attempts"] == 3
    got = sink.received("/flaky")
    assert [r.headers["csjd-attempt"] for r in got] == ["1", "2", "3"]
    assert len({r.headers["webhook-id"] for r in got}) == 1
    attempts = gateway.client.get(f"/jobs/{job['id']}/attempts").json()
    assert [(a["outcome"], a["status_code"]) for a in attempts] == [
        ("retryable", 500),
        ("retryable", 503),
        ("success", 200),
    ]


def test_attempts_run_out_and_the_job_fails(gateway: GatewayProcess, sink: Sink) -> None:
    sink.script("/down", [], then=Reply(status=500))
    gateway.put_target(
        "down", url=sink.url("/down"), max_attempts=3, backoff_initial_s=0.1, backoff_max_s=0.1
    )
    job = gateway.post_job("k", "down", 1).json()
    failed = gateway.wait_job(job["id"], ("failed",))
    assert (failed["failure_reason"], failed["attempts"]) == ("attempts_exhausted", 3)
    assert len(sink.received("/down")) == 3


def test_a_permanent_answer_fails_at_once(gateway: GatewayProcess, sink: Sink) -> None:
    sink.script("/strict", [Reply(status=422, body=b'{"error":"bad amount"}')])
    gateway.put_target("strict", url=sink.url("/strict"))
    job = gateway.post_job("k", "strict", 1).json()
    failed = gateway.wait_job(job["id"], ("failed",))
    assert (failed["failure_reason"], failed["attempts"], failed["last_status_code"]) == (
        "permanent_status",
        1,
        422,
    )
    attempt = gateway.client.get(f"/jobs/{job['id']}/attempts").json()[0]
    assert attempt["response_excerpt"] == '{"error":"bad amount"}'
    assert len(sink.received("/strict")) == 1


def test_a_hung_target_is_cut_off_by_the_deadline(gateway: GatewayProcess, sink: Sink) -> None:
    sink.script("/hang", [Reply(hang=True)])
    gateway.put_target("hang", url=sink.url("/hang"), timeout_s=0.5, max_attempts=1)
    job = gateway.post_job("k", "hang", 1).json()
    failed = gateway.wait_job(job["id"], ("failed",))
    assert failed["last_error"] == "timed out after 0.5 s"


def test_throttling_honours_retry_after_without_spending_an_attempt(
    gateway: GatewayProcess, sink: Sink
) -> None:
    sink.script("/busy", [Reply(status=429, headers={"Retry-After": "2"})])
    gateway.put_target("busy", url=sink.url("/busy"))
    job = gateway.post_job("k", "busy", 1).json()
    done = gateway.wait_job(job["id"], ("succeeded",), timeout=15)
    assert done["attempts"] == 1
    first, second = sink.received("/busy")
    assert second.at - first.at >= 1.9  # nothing was sent while the target asked for quiet
    assert [r.headers["csjd-attempt"] for r in (first, second)] == ["1", "2"]
    outcomes = [a["outcome"] for a in gateway.client.get(f"/jobs/{job['id']}/attempts").json()]
    assert outcomes == ["throttled", "success"]


def test_a_gone_target_is_disabled_and_resumes_when_enabled(
    gateway: GatewayProcess, sink: Sink
) -> None:
    sink.script("/gone", [Reply(status=410)])
    gateway.put_target("gone", url=sink.url("/gone"), max_concurrency=1)
    first = gateway.post_job("a", "gone", 1).json()
    failed = gateway.wait_job(first["id"], ("failed",))
    assert failed["failure_reason"] == "target_gone"
    target = gateway.client.get("/targets/gone").json()
    assert target["enabled"] is False and target["state"]["disabled_reason"]
    second = gateway.post_job("b", "gone", 2).json()
    assert gateway.job(second["id"])["state"] == "queued"
    gateway.put_target("gone", url=sink.url("/gone"), max_concurrency=1, enabled=True)
    gateway.wait_job(second["id"], ("succeeded",))


def test_kill_9_with_jobs_in_flight_loses_nothing(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    sink.script("/slow", [], then=Reply(delay_s=0.5))
    first = gateway_factory().start()
    first.put_target("slow", url=sink.url("/slow"), max_concurrency=20)
    ids = [first.post_job(f"k{i}", "slow", {"i": i}).json()["id"] for i in range(60)]
    sink.wait_for(lambda got: len(got) >= 10)  # deliveries are under way
    first.kill9()

    second = GatewayProcess(first.workdir)
    second.port = first.port
    second.client = first.client
    second.start()
    try:
        for job_id in ids:
            done = second.wait_job(job_id, ("succeeded",), timeout=60)
            assert done["attempts"] >= 1
        seen = {r.headers["webhook-id"] for r in sink.received("/slow")}
        assert seen == set(ids)
        interrupted = [
            a
            for job_id in ids
            for a in second.client.get(f"/jobs/{job_id}/attempts").json()
            if a["outcome"] == "interrupted"
        ]
        assert interrupted, "the jobs cut off by the kill were rescued as interrupted"
        assert "attempts_rescued" in second.logs()
    finally:
        second.stop()


def test_a_second_gateway_on_the_same_database_refuses_to_start(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    other = GatewayProcess(tmp_path).start(wait=False)
    code = other.wait(20)
    assert code != 0
    assert "another csjd gateway" in other.logs()
    assert gateway.client.get("/readyz").status_code == 200


def test_migrate_alone_and_the_targets_file(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink, tmp_path: Path
) -> None:
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"- name: billing\n  url: {sink.url('/hook')}\n  max_attempts: 4\n")
    env = {"CSJD_TARGETS_FILE": str(targets)}
    gateway = gateway_factory(**env)
    migrated = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=tmp_path,
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert gateway.db.exists()
    gateway.start()
    assert gateway.client.get("/targets/billing").json()["max_attempts"] == 4
    job = gateway.post_job("k", "billing", 1).json()
    gateway.wait_job(job["id"], ("succeeded",))


def test_a_broken_targets_file_stops_the_start_with_a_clear_message(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    targets = tmp_path / "targets.json"
    targets.write_text('[{"name": "x", "url": "ftp://nope"}]')
    gateway = gateway_factory(CSJD_TARGETS_FILE=str(targets)).start(wait=False)
    assert gateway.wait(30) != 0
    assert "CSJD_TARGETS_FILE" in gateway.logs()


def test_the_package_runs_from_its_own_checkout() -> None:
    assert (ROOT / "alembic" / "env.py").exists()


def test_an_api_and_a_dispatcher_process_share_one_database(tmp_path: Path, sink: Sink) -> None:
    api = GatewayProcess(tmp_path, role="api").start()
    dispatcher = GatewayProcess(tmp_path, role="dispatcher").start()
    second_api = GatewayProcess(tmp_path, role="api").start(wait=False)
    try:
        assert second_api.wait(20) != 0
        assert "already the api of" in second_api.logs()
        api.put_target("billing", url=sink.url("/hook"))
        ids = [api.post_job(f"k{i}", "billing", i).json()["id"] for i in range(30)]
        for job_id in ids:
            done = api.wait_job(job_id, ("succeeded",))
            assert done["attempts"] == 1
        assert {r.headers["webhook-id"] for r in sink.received("/hook")} == set(ids)
        assert dispatcher.client.get("/readyz").json()["checks"]["dispatcher"] == "ok"
        assert "dispatcher" not in api.client.get("/readyz").json()["checks"]
    finally:
        api.stop()
        dispatcher.stop()
        second_api.stop()
