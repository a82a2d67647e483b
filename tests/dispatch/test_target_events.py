"""Target events in the log: breaker moves, pauses, disables and enables, once each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from app.core.target import TargetSpec
from app.dispatch.timings import Timings
from app.testing import FakeClock, FakeSender, Reply
from tests.dispatch.conftest import Start
from tests.dispatch.harness import URL, Harness, eventually


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="csjd.dispatch"):
        yield caplog


def events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("target_")]


def names(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in events(caplog)]


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def drive(h: Harness, until: object, step: float = 1.0) -> None:
    """Move fake time on in steps, waking the dispatcher, until ``until()`` holds."""
    assert callable(until)
    for _ in range(200):
        if until():
            return
        h.advance(step)
        await asyncio.sleep(0.02)
    raise TimeoutError("the condition never held")


async def settle() -> None:
    """Let a wrongly chatty dispatcher log (absence can only be shown by waiting)."""
    await asyncio.sleep(0.2)


async def test_the_breaker_logs_opened_half_open_and_closed_once_per_move(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.default = Reply(status=500)
    h = await start(sender=sender, clock=clock)
    await h.put_target(max_concurrency=1, backoff_initial_s=1, backoff_max_s=1)
    job = await h.enqueue()
    await drive(h, lambda: names(caplog) == ["target_breaker_opened"])
    [opened] = events(caplog)
    live = h.live()
    assert live is not None and live.breaker_reopens_at == clock.now() + 30
    assert opened.levelno == logging.WARNING
    assert vars(opened)["target"] == "billing"
    assert vars(opened)["reason"] == "5 consecutive failures"
    assert vars(opened)["until"] == rfc3339(clock.now() + 30)
    assert vars(opened)["open_s"] == 30.0

    h.advance(30)  # half-open: the probe fails, the breaker opens for twice as long
    await eventually(lambda: len(events(caplog)) == 3)
    _, half_open, reopened = events(caplog)
    assert half_open.getMessage() == "target_breaker_half_open"
    assert half_open.levelno == logging.INFO and vars(half_open)["target"] == "billing"
    assert reopened.getMessage() == "target_breaker_opened"
    assert vars(reopened)["reason"] == "the half-open probe failed"
    assert vars(reopened)["until"] == rfc3339(clock.now() + 60)
    assert vars(reopened)["open_s"] == 60.0

    sender.default = Reply(status=200)
    h.advance(60)
    await h.wait_for_job(job.id, lambda j: j.state.value == "succeeded")
    await settle()
    assert names(caplog) == [
        "target_breaker_opened",
        "target_breaker_half_open",
        "target_breaker_opened",
        "target_breaker_half_open",
        "target_breaker_closed",
    ]
    assert events(caplog)[-1].levelno == logging.INFO


async def test_the_breaker_half_opens_in_the_log_with_no_job_to_probe(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.default = Reply(status=500)
    # no periodic reload of the targets to stumble on it: the claim loop sees the time
    h = await start(sender=sender, clock=clock, timings=Timings(target_refresh_s=3600))
    await h.put_target(max_attempts=5, backoff_initial_s=1, backoff_max_s=1)
    job = await h.enqueue()
    await drive(h, lambda: names(caplog) == ["target_breaker_opened"])
    await h.wait_for_job(job.id, lambda j: j.state.value == "failed")  # nothing left to send
    h.advance(30)
    await eventually(lambda: names(caplog)[-1:] == ["target_breaker_half_open"])
    live = h.live()
    assert live is not None and (live.breaker, live.breaker_reopens_at) == ("half_open", None)
    assert h.sample("csjd_breaker_state", target="billing") == 1.0


async def test_a_throttle_logs_one_pause_with_its_end_while_it_only_grows(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.script(
        URL,
        [Reply(status=429, headers={"Retry-After": str(s)}) for s in (10, 20, 30)],
    )
    h = await start(sender=sender, clock=clock)
    await h.put_target()
    for i in range(3):
        await h.enqueue(f"k{i}")
    await eventually(lambda: len(sender.requests) == 3)
    await eventually(lambda: "target_paused" in names(caplog))
    h.dispatcher.targets_changed()  # reading the pause back is no new pause
    await settle()
    [paused] = events(caplog)
    assert paused.getMessage() == "target_paused"
    assert paused.levelno == logging.WARNING
    assert vars(paused)["target"] == "billing" and vars(paused)["via"] == "attempt"
    target = await h.target()
    assert target.paused_until is not None
    assert vars(paused)["until"] in {rfc3339(clock.now() + s) for s in (10, 20, 30)}


async def test_a_gone_target_logs_disabled_with_its_reason_once(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    sender = FakeSender()
    sender.script(URL, [Reply(status=410)])
    h = await start(sender=sender, clock=FakeClock())
    await h.put_target()
    job = await h.enqueue()
    await h.wait_for_job(job.id, lambda j: j.state.value == "failed")
    await eventually(lambda: "target_disabled" in names(caplog))
    h.dispatcher.targets_changed()
    await settle()
    [disabled] = events(caplog)
    assert disabled.getMessage() == "target_disabled"
    assert disabled.levelno == logging.WARNING
    assert vars(disabled)["reason"] == "the target answered 410 Gone"
    assert vars(disabled)["via"] == "attempt"


async def test_an_operator_disabling_and_enabling_is_logged_once_each(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    h = await start(clock=FakeClock())
    await h.put_target(enabled=False)  # a target first seen disabled has not changed
    await settle()
    assert names(caplog) == []
    await h.put_target()
    await eventually(lambda: names(caplog) == ["target_enabled"])
    await h.put_target(timeout_s=2)  # still enabled: nothing to say
    await h.put_target(enabled=False)
    await eventually(lambda: len(names(caplog)) == 2)
    await settle()
    enabled, disabled = events(caplog)
    assert (enabled.getMessage(), enabled.levelno) == ("target_enabled", logging.INFO)
    assert vars(enabled)["via"] == "reload" and vars(enabled)["target"] == "billing"
    assert (disabled.getMessage(), disabled.levelno) == ("target_disabled", logging.INFO)
    assert vars(disabled)["reason"] == "disabled by an operator"
    assert vars(disabled)["via"] == "reload"


async def test_each_replica_logs_a_pause_once_the_one_throttled_says_so(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    sender, clock = FakeSender(), FakeClock()
    sender.script(URL, [Reply(status=429, headers={"Retry-After": "30"})])
    first = await start(sender=sender, clock=clock)
    second = await start(sender=sender, clock=clock)
    await first.put_target()
    second.dispatcher.targets_changed()
    await first.enqueue()
    await eventually(lambda: "target_paused" in names(caplog))
    for h in (first, second):
        h.dispatcher.targets_changed()  # as the periodic reload would
    await eventually(lambda: len(events(caplog)) == 2)
    await settle()
    assert sorted(vars(r)["via"] for r in events(caplog)) == ["attempt", "reload"]
    assert {vars(r)["until"] for r in events(caplog)} == {rfc3339(clock.now() + 30)}


async def test_a_deleted_targets_series_leave_the_metrics(start: Start) -> None:
    h = await start(clock=FakeClock())
    await h.put_target()
    await h.put_target("other")
    job = await h.enqueue()
    await h.wait_for_job(job.id, lambda j: j.state.value == "succeeded")
    assert h.sample("csjd_deliveries_total", target="billing", outcome="success") == 1.0
    await h.store.delete_target("billing")
    h.dispatcher.targets_changed()
    await eventually(lambda: h.sample("csjd_breaker_state", target="billing") is None)
    text = h.metrics.registry.get_sample_value
    for metric, labels in [
        ("csjd_deliveries_total", {"outcome": "success"}),
        ("csjd_delivery_duration_seconds_count", {}),
        ("csjd_inflight", {}),
        ("csjd_concurrency_limit", {}),
    ]:
        assert text(metric, {"target": "billing", **labels}) is None, metric
    assert h.sample("csjd_breaker_state", target="other") == 0.0
    # a target made again under that name counts from nothing
    await h.store.put_target(TargetSpec(name="billing", url=URL), h.clock.now())
    h.dispatcher.targets_changed()
    await h.enqueue("key-2")
    await eventually(
        lambda: h.sample("csjd_deliveries_total", target="billing", outcome="success") == 1.0
    )
