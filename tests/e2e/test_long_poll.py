"""End to end: ``Prefer: wait`` across processes (an API process beside a dispatcher)."""

from __future__ import annotations

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
