"""Lifecycle with real processes and real signals: drain, lame duck, crashes, leaks."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from app.dispatch.sender import KEEPALIVE_S
from app.serve import OVERRAN_EXIT, shutdown_budget_s
from app.settings import Settings
from app.testing import Reply, Sink
from tests.e2e.gateway import ROOT, GatewayProcess

pytestmark = pytest.mark.slow


def restart(old: GatewayProcess, **env: str) -> GatewayProcess:
    new = GatewayProcess(old.workdir, **env)
    new.port, new.client = old.port, old.client
    return new.start()


def test_kill_9_with_300_jobs_in_flight_loses_none(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    sink.answer("/slow", Reply(delay_s=0.3))
    first = gateway_factory().start()
    first.put_target("slow", url=sink.url("/slow"), max_concurrency=300)
    ids = [first.post_job(f"k{i}", "slow", i).json()["id"] for i in range(300)]
    sink.wait_for(lambda got: len(got) >= 100)
    first.kill9()
    killed_at = time.monotonic()
    second = restart(first)
    try:
        for job_id in ids:
            second.wait_job(job_id, ("succeeded",), timeout=60)
        rescue_s = time.monotonic() - killed_at
        assert {r.headers["webhook-id"] for r in sink.received("/slow")} == set(ids)
        print(f"rescue after kill -9: every job succeeded {rescue_s:.2f}s after the kill")
    finally:
        second.stop()


def test_sigterm_is_a_lame_duck_then_a_clean_drain(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    sink.answer("/work", Reply(delay_s=1.5))
    gateway = gateway_factory(CSJD_SHUTDOWN_DELAY_S="2").start()
    gateway.put_target("work", url=sink.url("/work"), max_concurrency=20)
    ids = [gateway.post_job(f"k{i}", "work", i).json()["id"] for i in range(20)]
    sink.wait_for(lambda got: len(got) == 20)
    signalled = time.monotonic()
    gateway.signal(signal.SIGTERM)

    # at once: not ready, no intake, reads still work
    deadline = signalled + 1.5
    while gateway.client.get("/readyz").status_code != 503:
        assert time.monotonic() < deadline
    refused = gateway.post_job("late", "work", 1)
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) > 0
    assert gateway.client.get(f"/jobs/{ids[0]}").status_code == 200
    # the listener stays open for the delay, then closes
    assert gateway.client.get("/healthz").status_code == 200
    assert time.monotonic() - signalled < 2
    code = gateway.wait(30)
    assert code == 0
    assert time.monotonic() - signalled >= 2
    with pytest.raises(httpx.TransportError):
        gateway.client.get("/healthz")

    logs = gateway.logs()
    assert '"event":"drain_timeout"' not in logs  # no delivery was cut mid-request
    again = restart(gateway)
    try:
        for job_id in ids:
            job = again.wait_job(job_id, ("succeeded",))
            assert job["attempts"] == 1
        assert len(sink.received("/work")) == 20  # each delivered once, none repeated
        assert again.client.get("/jobs", params={"state": "queued"}).json()["items"] == []
    finally:
        again.stop()


def test_a_hung_target_cannot_hold_up_shutdown(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    sink.answer("/hung", Reply(hang=True))
    gateway = gateway_factory(CSJD_DRAIN_TIMEOUT_S="2").start()
    gateway.put_target("hung", url=sink.url("/hung"), timeout_s=120)
    ids = [gateway.post_job(f"k{i}", "hung", i).json()["id"] for i in range(5)]
    sink.wait_for(lambda got: len(got) == 5)
    signalled = time.monotonic()
    gateway.signal(signal.SIGTERM)
    assert gateway.wait(30) == 0
    drain_s = time.monotonic() - signalled
    assert drain_s < 7
    print(f"shutdown with a hung target took {drain_s:.2f}s")
    sink.answer("/hung", Reply(status=200))
    again = restart(gateway, CSJD_DRAIN_TIMEOUT_S="2")
    try:
        for job_id in ids:
            attempts = again.client.get(f"/jobs/{job_id}/attempts").json()
            assert attempts[0]["outcome"] == "interrupted"
            job = again.wait_job(job_id, ("succeeded",))
            assert job["attempts"] == 1, "the interrupted attempt was not counted"
    finally:
        again.stop()


def test_a_stop_ends_within_its_bound_with_a_hung_delivery_and_a_stalled_request(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    """The drain of deliveries and uvicorn's wait for requests under way run side
    by side; one after the other they would take delay + 2 x drain."""
    env = {"CSJD_SHUTDOWN_DELAY_S": "0.5", "CSJD_DRAIN_TIMEOUT_S": "6"}
    budget = shutdown_budget_s(Settings(_env_file=None, shutdown_delay_s=0.5, drain_timeout_s=6))  # type: ignore[call-arg]
    sink.answer("/hung", Reply(hang=True))
    gateway = gateway_factory(**env).start()
    gateway.put_target("hung", url=sink.url("/hung"), timeout_s=120)
    job = gateway.post_job("k", "hung", 1).json()
    sink.wait_for(lambda got: len(got) == 1)
    # a request under way when the listener closes: its body never finishes
    stalled = socket.create_connection(("127.0.0.1", gateway.port))
    try:
        stalled.sendall(
            # not POST /jobs: a draining gateway refuses those before their body
            b"PUT /targets/stalled HTTP/1.1\r\nHost: csjd\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"url'
        )
        signalled = time.monotonic()
        gateway.signal(signal.SIGTERM)
        assert gateway.wait(30) == 0
        took = time.monotonic() - signalled
    finally:
        stalled.close()
    assert 6 <= took <= budget, f"the stop took {took:.1f}s; its bound is {budget:g}s"
    sink.answer("/hung", Reply(status=200))
    again = restart(gateway, **env)
    try:
        attempts = again.client.get(f"/jobs/{job['id']}/attempts").json()
        assert attempts[0]["outcome"] == "interrupted"  # put back, not counted
    finally:
        again.stop()


def test_a_stop_that_overruns_its_budget_is_cut_short() -> None:
    """What enforces the bound, on its own: a stop that hangs exits at the budget."""
    program = (
        "import asyncio\n"
        "from app.serve import enforce_budget\n"
        "async def stop_that_hangs():\n"
        "    enforce_budget(0.5)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(stop_that_hangs())\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, timeout=30
    )
    assert done.returncode == OVERRAN_EXIT, done.stderr
    assert time.monotonic() - started < 10  # the interpreter's start included


def test_a_second_signal_stops_at_once(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    sink.answer("/hung", Reply(hang=True))
    gateway = gateway_factory(CSJD_SHUTDOWN_DELAY_S="30").start()
    gateway.put_target("hung", url=sink.url("/hung"), timeout_s=120)
    job = gateway.post_job("k", "hung", 1).json()
    sink.wait_for(lambda got: len(got) == 1)
    gateway.signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while gateway.client.get("/readyz").status_code != 503:
        assert time.monotonic() < deadline
    gateway.signal(signal.SIGTERM)
    assert gateway.wait(5) != 0
    sink.answer("/hung", Reply(status=200))
    again = restart(gateway)
    try:
        again.wait_job(job["id"], ("succeeded",))
    finally:
        again.stop()


def _footprint(pid: int) -> tuple[int, int, float]:
    proc = psutil.Process(pid)
    return proc.num_fds(), proc.num_threads(), proc.memory_info().rss / 2**20


@pytest.mark.alone
def test_soak_returns_to_its_baseline(gateway: GatewayProcess, sink: Sink) -> None:
    sink.answer("/ok", Reply())
    sink.answer("/err", Reply(status=500))
    sink.answer("/hang", Reply(hang=True))
    gateway.put_target("ok", url=sink.url("/ok"), max_concurrency=64)
    # the failing targets' breakers open and their jobs wait: let them expire soon
    gateway.put_target(
        "err",
        url=sink.url("/err"),
        max_attempts=2,
        backoff_initial_s=0.1,
        backoff_max_s=0.1,
        max_retry_duration_s=3,
    )
    gateway.put_target(
        "hang", url=sink.url("/hang"), timeout_s=0.5, max_attempts=1, max_retry_duration_s=3
    )
    assert gateway.proc is not None
    pid = gateway.proc.pid

    def push(start: int, stop: int) -> None:
        with httpx.Client(base_url=gateway.client.base_url, timeout=30) as c:
            for i in range(start, stop):
                name = ("ok", "ok", "ok", "err", "hang")[i % 5]
                c.post(
                    "/jobs",
                    json={"target": name, "payload": i},
                    headers={"Idempotency-Key": f"soak-{i}"},
                )

    def soak(first: int, jobs: int) -> None:
        share = jobs // 4
        workers = [
            threading.Thread(target=push, args=(first + n * share, first + (n + 1) * share))
            for n in range(4)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        _wait_idle(gateway, timeout=120)

    soak(0, 50)  # every path once: lazily made pools and caches exist
    fds0, threads0, rss0 = _settled_footprint(pid)
    soak(10_000, 1200)
    fds1, threads1, rss1 = _settled_footprint(pid)
    print(
        f"soak: fds {fds0}->{fds1}, threads {threads0}->{threads1}, rss {rss0:.1f}->{rss1:.1f} MB"
    )
    assert fds1 <= fds0
    assert threads1 <= threads0
    assert rss1 - rss0 < 100


def _settled_footprint(pid: int, timeout: float = 40) -> tuple[int, int, float]:
    """The footprint once idle connections have been let go (no change for a while)."""
    quiet_for = KEEPALIVE_S + 2
    deadline = time.monotonic() + timeout
    last = _footprint(pid)
    since = time.monotonic()
    while time.monotonic() - since < quiet_for:
        assert time.monotonic() < deadline, "the process never settled"
        time.sleep(0.25)
        now = _footprint(pid)
        if now[:2] != last[:2]:
            last, since = now, time.monotonic()
    return _footprint(pid)


def _wait_idle(gateway: GatewayProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        busy = [
            j
            for state in ("scheduled", "queued", "running", "retrying")
            for j in gateway.client.get("/jobs", params={"state": state, "limit": 1}).json()[
                "items"
            ]
        ]
        if not busy:
            return
        assert time.monotonic() < deadline, f"still busy: {busy[:1]}"
        time.sleep(0.1)


def test_start_stop_stress_loses_nothing(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink, tmp_path: Path
) -> None:
    sink.answer("/hook", Reply(delay_s=0.05))
    gateway = gateway_factory(CSJD_DRAIN_TIMEOUT_S="2").start()
    gateway.put_target("t", url=sink.url("/hook"))
    accepted: set[str] = set()
    stop = threading.Event()

    def produce() -> None:
        i = 0
        with httpx.Client(base_url=gateway.client.base_url, timeout=5) as c:
            while not stop.is_set():
                try:
                    r = c.post(
                        "/jobs",
                        json={"target": "t", "payload": i},
                        headers={"Idempotency-Key": f"s-{i}"},
                    )
                except httpx.TransportError:
                    time.sleep(0.02)  # down between restarts: the producer retries
                    continue
                if r.status_code == 202:
                    accepted.add(r.json()["id"])
                    i += 1
                else:
                    assert r.status_code == 503, r.text
                    time.sleep(0.02)

    producer = threading.Thread(target=produce)
    producer.start()
    current = gateway
    try:
        for _ in range(12):
            deadline = time.monotonic() + 5
            while len(accepted) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            signalled = time.monotonic()
            current.signal(signal.SIGTERM)
            assert current.wait(15) == 0
            assert time.monotonic() - signalled < 2 + 3  # drain timeout + margin
            current = restart(current, CSJD_DRAIN_TIMEOUT_S="2")
    finally:
        stop.set()
        producer.join()
    try:
        for job_id in accepted:
            current.wait_job(job_id, ("succeeded",), timeout=60)
        assert accepted <= {r.headers["webhook-id"] for r in sink.received("/hook")}
    finally:
        current.stop()
