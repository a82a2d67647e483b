"""End to end: ``Prefer: wait`` across processes (an API process beside a dispatcher)."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import pytest

from app.testing import Reply, Sink
from tests.e2e.gateway import GatewayProcess

pytestmark = pytest.mark.slow


def test_a_waiting_request_on_the_api_process_sees_the_dispatchers_work(
    tmp_path: Path, sink: Sink
) -> None:
    sink.answer("/slow", Reply(delay_s=0.5))
    api = GatewayProcess(tmp_path, role="api").start()
    dispatcher = GatewayProcess(tmp_path, role="dispatcher").start()
    try:
        api.put_target("billing", url=sink.url("/slow"))
        job = api.post_job("k1", "billing", {"n": 1}).json()
        states = [job["state"]]
        while states[-1] != "succeeded":
            # the client gives up long before the wait ends: only a wake-up answers in time
            response = api.client.get(
                f"/jobs/{job['id']}", headers={"Prefer": "wait=30"}, timeout=10
            )
            assert response.status_code == 200
            assert response.headers["preference-applied"] == "wait=30"
            states.append(response.json()["state"])
            assert states[-1] != states[-2], states
        assert set(states) <= {"queued", "running", "succeeded"}
    finally:
        api.stop()
        dispatcher.stop()


def test_a_client_that_hangs_up_gives_its_place_to_wait_back(tmp_path: Path) -> None:
    """With one place, a waiting client that disconnects frees it long before its
    30 s wait would have ended."""
    gateway = GatewayProcess(tmp_path, CSJD_MAX_WAITERS="1").start()
    try:
        gateway.put_target("billing", url="http://127.0.0.1:9/hook")
        job = gateway.post_job("k1", "billing", 1, delay_s=3600).json()

        def probe() -> bool:
            """Whether a short wait is granted now (the one place is free)."""
            response = gateway.client.get(f"/jobs/{job['id']}", headers={"Prefer": "wait=0.05"})
            assert response.status_code == 200
            return "preference-applied" in response.headers

        request = f"GET /jobs/{job['id']} HTTP/1.1\r\nHost: csjd\r\nPrefer: wait=30\r\n\r\n"

        def wait_on_a_raw_socket() -> socket.socket:
            waiter = socket.create_connection(("127.0.0.1", gateway.port))
            waiter.sendall(request.encode())
            return waiter

        waiter = wait_on_a_raw_socket()
        try:
            deadline = time.monotonic() + 10
            while probe():  # until the waiter holds the place
                assert time.monotonic() < deadline, "the waiter never took the place"
                if select.select([waiter], [], [], 0)[0]:
                    # a probe held the place when it came, so it was answered at once
                    waiter.close()
                    waiter = wait_on_a_raw_socket()
        finally:
            waiter.close()
        deadline = time.monotonic() + 5
        while not probe():
            assert time.monotonic() < deadline, "the place was not given back on hang-up"
    finally:
        gateway.stop()
