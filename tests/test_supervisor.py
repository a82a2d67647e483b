"""A background loop that dies is logged, reported and restarted."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.supervisor import Supervisor
from tests.conftest import Api


async def test_a_crashing_loop_is_restarted_and_reported_while_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    release = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("boom")
        await release.wait()

    supervisor = Supervisor()
    supervisor.start("worker", loop)
    deadline = time.monotonic() + 5
    while not supervisor.status()["worker"].startswith("restarting"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    assert supervisor.status()["worker"] == "restarting"  # why is for the log alone
    while runs < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert supervisor.status()["worker"] == "ok"
    [crash] = [r for r in caplog.records if r.getMessage() == "loop_crashed"]
    assert crash.exc_info is not None and str(crash.exc_info[1]) == "boom"
    release.set()
    while supervisor.status()["worker"] != "stopped":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await supervisor.stop()


async def test_the_dispatcher_comes_back_after_a_crash(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.put_target()
    dispatcher = api.gateway.dispatcher
    original = dispatcher._claim_round
    crashes = 0

    async def flaky_claim_round() -> bool:
        nonlocal crashes
        if crashes < 3:
            crashes += 1
            raise RuntimeError("claim failed")
        return await original()

    monkeypatch.setattr(dispatcher, "_claim_round", flaky_claim_round)
    dispatcher.wake()
    seen_down = False
    deadline = time.monotonic() + 10
    while crashes < 3 or not seen_down:
        ready = await api.client.get("/readyz")
        if ready.status_code == 503:
            assert ready.json()["checks"]["dispatcher"] == "restarting"
            assert "claim failed" not in ready.text and "RuntimeError" not in ready.text
            seen_down = True
        assert time.monotonic() < deadline, "the crash was never reported"
        await asyncio.sleep(0.005)
    job = (await api.post_job()).json()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
    assert (await api.client.get("/readyz")).status_code == 200
