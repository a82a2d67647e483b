"""End to end: what a real target sees when it fails, hangs, throttles or recovers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from app.testing import Received, Reply, Sink
from tests.e2e.gateway import GatewayProcess

pytestmark = pytest.mark.slow


def test_a_failing_target_is_not_stormed(gateway: GatewayProcess, sink: Sink) -> None:
    sink.answer("/down", Reply(status=500))
    gateway.put_target(
        "down", url=sink.url("/down"), max_attempts=5, backoff_initial_s=0.2, backoff_max_s=2
    )
    started = time.monotonic()
    for i in range(60):  # 60 jobs over 10 s
        assert gateway.post_job(f"k{i}", "down", {"i": i}).status_code == 202
        time.sleep(max(0.0, started + (i + 1) / 6 - time.monotonic()))
    time.sleep(max(0.0, started + 12 - time.monotonic()))  # let retries come due
    received = len(sink.received("/down"))
    assert received <= 60 * 1.2 + 30, f"{received} requests for 60 jobs: a retry storm"
    target = gateway.client.get("/targets/down").json()
    assert target["state"]["breaker"] == "open"
    jobs = gateway.client.get("/jobs", params={"target": "down", "limit": 100}).json()["items"]
    assert all(j["attempts"] < 5 for j in jobs), "waiting jobs spent no attempts"


def test_a_hung_target_does_not_delay_another(gateway: GatewayProcess, sink: Sink) -> None:
    sink.answer("/hung", Reply(hang=True))
    gateway.put_target("hung", url=sink.url("/hung"), timeout_s=2)
    gateway.put_target("fine", url=sink.url("/fine"))
    for i in range(200):
        gateway.post_job(f"a{i}", "hung", i)
    sink.wait_for(lambda got: any(r.path == "/hung" for r in got))
    accepted: dict[str, float] = {}
    for i in range(20):
        job = gateway.post_job(f"b{i}", "fine", i).json()
        accepted[job["id"]] = time.time()
    delivered = sink.wait_for(
        lambda got: len({r.headers["webhook-id"] for r in got if r.path == "/fine"}) == 20,
        timeout=10,
    )
    for r in delivered:
        if r.path == "/fine":
            assert r.at - accepted[r.headers["webhook-id"]] < 3.0


def test_a_hung_target_with_a_large_limit_holds_only_its_share_of_the_pool(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    gateway = gateway_factory(CSJD_MAX_INFLIGHT="8", CSJD_DRAIN_TIMEOUT_S="1").start()
    sink.answer("/hung", Reply(hang=True))
    # its limit is far above the pool, and its attempts outlast the test
    gateway.put_target("hung", url=sink.url("/hung"), max_concurrency=100, timeout_s=120)
    gateway.put_target("fine", url=sink.url("/fine"))
    due = datetime.now(UTC) + timedelta(seconds=3)

    def post(key: str) -> int:
        target = key.rstrip("0123456789")
        return gateway.post_job(key, target, key, run_at=due.isoformat()).status_code

    # both targets' jobs come due at the same moment, all stored before it
    with ThreadPoolExecutor(8) as pool:
        keys = [f"{target}{i}" for i in range(40) for target in ("hung", "fine")]
        assert set(pool.map(post, keys)) == {202}
    assert time.time() < due.timestamp(), "storing the jobs took longer than the test allows"

    def fine(got: list[Received]) -> list[Received]:
        return [r for r in got if r.path == "/fine"]

    got = sink.wait_for(
        lambda got: len(fine(got)) == 40, timeout=due.timestamp() - time.time() + 10
    )
    held = 0  # every /hung request is still hanging: each one seen holds a slot
    for r in got:
        if r.path == "/hung":
            held += 1
            continue
        assert held <= 4, f"the hung target held {held} of 8 slots while another had due work"
        assert r.at - due.timestamp() < 5
    # nobody else has work now: it may use the whole pool, and no more
    sink.wait_for(lambda got: sum(r.path == "/hung" for r in got) == 8)
    assert gateway.client.get("/targets/hung").json()["state"]["inflight"] == 8


def test_recovery_starts_with_one_probe_then_ramps_up(gateway: GatewayProcess, sink: Sink) -> None:
    sink.answer("/outage", Reply(status=500))
    gateway.put_target(
        "outage",
        url=sink.url("/outage"),
        max_concurrency=32,
        backoff_initial_s=0.5,
        backoff_max_s=2,
    )
    for i in range(500):
        gateway.post_job(f"k{i}", "outage", i)
    sink.wait_for(lambda got: len(got) >= 5)
    outage_ends = time.time() + 20
    recover = threading.Timer(20, sink.answer, ("/outage", Reply(status=200, delay_s=0.2)))
    recover.start()
    try:
        sink.wait_for(lambda got: sum(r.status == 200 for r in got) >= 40, timeout=80)
    finally:
        recover.cancel()
    after = [r for r in sink.received("/outage") if r.at >= outage_ends]
    assert after[0].concurrency == 1, "the first request after recovery is a lone probe"
    assert after[1].at >= after[0].at + 0.2, "nothing else went out while the probe ran"
    # slow start: windows of 1, 2, 4, 8 ... never the whole limit at once
    assert max(r.concurrency for r in after[:7]) <= 4
    assert max(r.concurrency for r in after[:40]) < 32
