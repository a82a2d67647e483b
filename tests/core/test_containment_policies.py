"""Breaker, retry budget, adaptive limit and rate bucket: pure, on a fake timeline."""

from __future__ import annotations

import pytest

from app.core import breaker as br
from app.core import budget as bg
from app.core import limits

T = 1_800_000_000.0


def fail(b: br.Breaker, now: float, job: str = "j") -> br.Breaker:
    return br.record(b, job_id=job, started_at=now, failed=True, now=now)


def ok(b: br.Breaker, now: float, job: str = "j") -> br.Breaker:
    return br.record(b, job_id=job, started_at=now, failed=False, now=now)


def test_five_consecutive_failures_open_the_breaker_for_30_s() -> None:
    b = br.Breaker()
    for i in range(4):
        b = fail(b, T + i)
        assert b.state is br.BreakerState.CLOSED
    b = fail(b, T + 4)
    assert b.state is br.BreakerState.OPEN
    assert b.reopens_at == T + 34
    assert br.capacity(b, T + 33.9) == 0


def test_a_success_resets_the_consecutive_count() -> None:
    b = br.Breaker()
    for i in range(4):
        b = fail(b, T + i)
    b = ok(b, T + 5)
    for i in range(4):
        b = fail(b, T + 6 + i)
    assert b.state is br.BreakerState.CLOSED


def test_half_of_the_last_twenty_calls_failing_opens_it_once_ten_were_made() -> None:
    b = br.Breaker()
    for i in range(8):  # alternating: never 5 in a row
        b = fail(b, T) if i % 2 else ok(b, T)
    assert b.state is br.BreakerState.CLOSED  # 4 of 8, but fewer than 10 calls
    b = ok(b, T)
    b = fail(b, T)
    assert b.state is br.BreakerState.OPEN  # 5 of 10


def test_half_open_admits_exactly_one_probe_and_success_closes() -> None:
    b = br.Breaker()
    for _ in range(5):
        b = fail(b, T)
    assert br.capacity(b, T + 30) == 1
    assert br.current(b, T + 30).state is br.BreakerState.HALF_OPEN
    b = br.start_probe(b, "probe", T + 30)
    assert br.capacity(b, T + 30) == 0
    b = ok(b, T + 31, job="straggler")  # not the probe: changes nothing
    assert b.state is br.BreakerState.HALF_OPEN
    b = ok(b, T + 31, job="probe")
    assert b.state is br.BreakerState.CLOSED
    assert br.capacity(b, T + 31) is None


def test_a_failed_probe_reopens_for_twice_as_long_up_to_ten_minutes() -> None:
    b = br.Breaker()
    for _ in range(5):
        b = fail(b, T)
    now = T
    durations = []
    for _ in range(7):
        now = b.reopens_at or now
        b = br.start_probe(b, "p", now)
        b = fail(b, now, job="p")
        durations.append(b.open_s)
    assert durations == [60, 120, 240, 480, 600, 600, 600]


def test_a_throttled_or_interrupted_probe_lets_another_probe_go() -> None:
    b = br.Breaker()
    for _ in range(5):
        b = fail(b, T)
    b = br.start_probe(b, "p", T + 30)
    b = br.probe_lost(b, "p", T + 31)
    assert br.capacity(b, T + 31) == 1


def test_attempts_started_before_the_breaker_opened_do_not_count_after() -> None:
    b = br.Breaker()
    for _ in range(5):
        b = fail(b, T + 10)
    closed = br.record(
        br.Breaker(opened_at=T + 10), job_id="x", started_at=T + 5, failed=True, now=T + 11
    )
    assert closed.recent == ()


def test_a_breaker_policy_moves_the_thresholds_and_the_open_periods() -> None:
    policy = br.Policy(consecutive_failures=2, open_s=5, max_open_s=8)
    b = br.Breaker()
    b = br.record(b, job_id="j", started_at=T, failed=True, now=T, policy=policy)
    assert b.state is br.BreakerState.CLOSED
    b = br.record(b, job_id="j", started_at=T, failed=True, now=T, policy=policy)
    assert (b.state, b.reopens_at) == (br.BreakerState.OPEN, T + 5)
    b = br.start_probe(b, "p", T + 5)
    b = br.record(b, job_id="p", started_at=T + 5, failed=True, now=T + 5, policy=policy)
    assert b.reopens_at == T + 5 + 8  # twice 5 s, but no more than 8


def test_a_breaker_policy_can_leave_the_breaker_closed_whatever_fails() -> None:
    policy = br.Policy(consecutive_failures=10**9, failure_ratio=2.0)
    b = br.Breaker()
    for i in range(100):
        b = br.record(b, job_id="j", started_at=T + i, failed=True, now=T + i, policy=policy)
    assert b.state is br.BreakerState.CLOSED


def test_retry_budget_is_a_fifth_of_first_attempts_plus_ten_a_second() -> None:
    b = bg.Budget()
    assert bg.retries_allowed(b, T) == 100  # the floor: 10/s over 10 s
    for _ in range(50):
        b = bg.record_first(b, T)
    assert bg.retries_allowed(b, T) == 110
    for _ in range(110):
        b = bg.record_retry(b, T)
    assert bg.retries_allowed(b, T) == 0
    assert bg.retries_allowed(b, T + 10) == 100  # the window slid past them


def test_a_spent_budget_says_when_the_next_retry_may_go() -> None:
    b = bg.Budget()
    assert bg.next_retry_in(b, T) == 0.0
    for _ in range(100):  # the whole floor, spent in one second
        b = bg.record_retry(b, T)
    assert bg.retries_allowed(b, T + 9.9) == 0
    # that second leaves the window at T + 10
    assert bg.next_retry_in(b, T + 3.25) == 6.75
    assert bg.retries_allowed(b, T + 10) == 100


def test_a_budget_policy_sets_the_floor_the_share_and_the_window() -> None:
    policy = bg.Policy(window_s=4, ratio=0.5, floor_per_s=0.5)
    b = bg.Budget()
    assert bg.retries_allowed(b, T, policy=policy) == 2  # 0.5/s over 4 s
    for _ in range(4):
        b = bg.record_first(b, T, policy=policy)
    assert bg.retries_allowed(b, T, policy=policy) == 4
    for _ in range(4):
        b = bg.record_retry(b, T, policy=policy)
    assert bg.next_retry_in(b, T, policy=policy) == 4.0  # when T leaves the 4 s window


def test_aimd_adds_one_per_window_and_halves_on_overload() -> None:
    c = limits.fresh(8)
    c = limits.on_overload(c)
    assert c.limit == 4
    for _ in range(4):
        c = limits.on_success(c)
    assert c.limit == 5
    for _ in range(100):
        c = limits.on_success(c)
    assert c.limit == 8  # never above the maximum
    for _ in range(5):
        c = limits.on_overload(c)
    assert c.limit == 1  # never below one


def test_slow_start_doubles_per_window_from_one() -> None:
    c = limits.restart(limits.fresh(16))
    seen = [c.limit]
    while c.limit < 16:
        for _ in range(c.limit):
            c = limits.on_success(c)
        seen.append(c.limit)
    assert seen == [1, 2, 4, 8, 16]
    assert not c.slow_start


def test_resizing_follows_a_limit_at_its_old_maximum() -> None:
    assert limits.resize(limits.fresh(4), 10).limit == 10
    assert limits.resize(limits.on_overload(limits.fresh(8)), 2).limit == 2
    assert limits.resize(limits.on_overload(limits.fresh(8)), 20).limit == 4


@pytest.mark.parametrize(("rate", "burst"), [(0.5, 1), (5, 5)])
def test_the_rate_bucket_refills_at_its_rate(rate: float, burst: int) -> None:
    b = limits.bucket(rate, T)
    assert limits.available(b, T) == burst
    b = limits.take(b, burst, T)
    assert limits.available(b, T) == 0
    assert limits.next_token_in(b, T) == pytest.approx(1 / rate)
    assert limits.available(b, T + 1 / rate) == 1
    assert limits.available(b, T + 100) == burst
