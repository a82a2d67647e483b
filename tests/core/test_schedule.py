"""Schedules' decisions: fire times in a time zone, missed fires collapsed, DST, refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from app.core.schedule import (
    Cron,
    InvalidSchedule,
    ScheduleRecord,
    ScheduleSpec,
    fire_key,
    first_run,
    plan,
)
from app.core.target import TargetRecord, TargetSpec

PARIS = ZoneInfo("Europe/Paris")


def at(*args: int, tz: ZoneInfo | None = None) -> float:
    return datetime(*args, tzinfo=tz or UTC).timestamp()  # type: ignore[misc]


def utc(ts: float | None) -> str:
    assert ts is not None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def paris(ts: float | None) -> str:
    assert ts is not None
    return datetime.fromtimestamp(ts, PARIS).isoformat()


def record(
    cron: str = "*/5 * * * *", *, next_run_at: float | None, enabled: bool = True
) -> ScheduleRecord:
    spec = ScheduleSpec(
        name="nightly",
        cron=cron,
        timezone="UTC",
        target="billing",
        payload=b'{"run":"nightly"}',
        headers={"x-kind": "report"},
        enabled=enabled,
    )
    return ScheduleRecord(
        spec=spec,
        next_run_at=next_run_at,
        last_run_at=None,
        last_job_id=None,
        last_error=None,
        created_at=0.0,
        updated_at=1.0,
    )


def target(*, enabled: bool = True) -> TargetRecord:
    return TargetRecord(
        spec=TargetSpec(name="billing", url="http://x/hook", enabled=enabled),
        disabled_reason=None,
        paused_until=None,
        created_at=0.0,
        updated_at=0.0,
    )


class TestFireTimes:
    def test_every_five_minutes_fires_on_the_next_multiple_of_five(self) -> None:
        cron = Cron.parse("*/5 * * * *", "UTC")
        assert utc(cron.next_after(at(2026, 1, 1, 10, 2, 30))) == "2026-01-01T10:05:00Z"

    def test_a_fire_time_at_the_instant_asked_is_not_the_next(self) -> None:
        cron = Cron.parse("*/5 * * * *", "UTC")
        assert utc(cron.next_after(at(2026, 1, 1, 10, 5))) == "2026-01-01T10:10:00Z"
        assert utc(cron.latest_at_or_before(at(2026, 1, 1, 10, 5))) == "2026-01-01T10:05:00Z"

    def test_the_time_of_day_is_read_in_the_schedules_time_zone(self) -> None:
        cron = Cron.parse("0 9 * * *", "Europe/Paris")
        # 09:00 in Paris in winter is 08:00 UTC, in summer 07:00 UTC
        assert utc(cron.next_after(at(2026, 1, 10))) == "2026-01-10T08:00:00Z"
        assert utc(cron.next_after(at(2026, 7, 10))) == "2026-07-10T07:00:00Z"

    def test_seconds_come_first_in_six_fields(self) -> None:
        cron = Cron.parse("*/15 * * * * *", "UTC")
        assert utc(cron.next_after(at(2026, 1, 1, 0, 0, 1))) == "2026-01-01T00:00:15Z"

    def test_nicknames_name_the_commonest_schedules(self) -> None:
        cron = Cron.parse("@daily", "UTC")
        assert utc(cron.next_after(at(2026, 1, 1, 12))) == "2026-01-02T00:00:00Z"


class TestDaylightSaving:
    """Paris: clocks go forward at 02:00 on 2026-03-29, back at 03:00 on 2026-10-25."""

    def test_a_time_the_change_skips_fires_once_right_after_the_gap(self) -> None:
        cron = Cron.parse("30 2 * * *", "Europe/Paris")
        first = cron.next_after(at(2026, 3, 28, 12, tz=PARIS))
        assert paris(first) == "2026-03-29T03:00:00+02:00"
        assert paris(cron.next_after(first or 0)) == "2026-03-30T02:30:00+02:00"

    def test_a_time_the_change_repeats_fires_once(self) -> None:
        cron = Cron.parse("30 2 * * *", "Europe/Paris")
        first = cron.next_after(at(2026, 10, 24, 12, tz=PARIS))
        assert paris(first) == "2026-10-25T02:30:00+02:00"
        # not again at 02:30+01:00 an hour later: the next is the next day's
        assert paris(cron.next_after(first or 0)) == "2026-10-26T02:30:00+01:00"

    def test_a_frequent_schedule_keeps_its_pace_through_the_repeated_hour(self) -> None:
        cron = Cron.parse("0,30 * * * *", "Europe/Paris")
        t = at(2026, 10, 25, 1, 45, tz=PARIS)
        fires = []
        for _ in range(4):
            t = cron.next_after(t) or 0
            fires.append(utc(t))
        # every half hour of real time, through both 02:xx hours
        assert fires == [
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
        ]

    def test_after_a_time_in_the_repeated_hour_the_next_fire_is_later_still(self) -> None:
        cron = Cron.parse("30 2 * * *", "Europe/Paris")
        second_0215 = at(2026, 10, 25, 1, 15)  # 02:15+01:00, after the 02:30+02:00 fire
        assert cron.next_after(second_0215) == at(2026, 10, 26, 1, 30)

    def test_the_latest_fire_before_a_skipped_time_is_the_one_after_the_gap(self) -> None:
        cron = Cron.parse("30 2 * * *", "Europe/Paris")
        latest = cron.latest_at_or_before(at(2026, 3, 29, 12, tz=PARIS))
        assert paris(latest) == "2026-03-29T03:00:00+02:00"


class TestInvalid:
    @pytest.mark.parametrize(
        ("cron", "says"),
        [
            ("* * *", "has 3"),
            ("61 * * * *", "bad minute"),
            ("0 0 30 2 *", "bad day-of-month"),
            ("@often", "unknown nickname"),
            ("x" * 300, "at most 255"),
        ],
    )
    def test_a_bad_expression_says_what_is_wrong(self, cron: str, says: str) -> None:
        with pytest.raises(InvalidSchedule, match=says):
            Cron.parse(cron, "UTC")

    @pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe", "../etc/passwd", "", "utc"])
    def test_an_unknown_time_zone_is_refused(self, zone: str) -> None:
        with pytest.raises(InvalidSchedule, match="time zone"):
            Cron.parse("* * * * *", zone)


class TestPlan:
    def test_a_schedule_fires_first_at_its_next_time_after_it_was_put(self) -> None:
        spec = record(next_run_at=None).spec
        assert utc(first_run(spec, at(2026, 1, 1, 10, 2))) == "2026-01-01T10:05:00Z"

    def test_a_disabled_schedule_has_no_next_run(self) -> None:
        assert first_run(record(next_run_at=None, enabled=False).spec, at(2026, 1, 1)) is None

    def test_nothing_fires_before_the_next_run(self) -> None:
        assert (
            plan(record(next_run_at=at(2026, 1, 1, 10, 5)), target(), at(2026, 1, 1, 10, 4)) is None
        )

    def test_a_due_fire_makes_one_job_keyed_by_its_fire_time(self) -> None:
        due = at(2026, 1, 1, 10, 5)
        fire = plan(record(next_run_at=due), target(), due + 0.4)
        assert fire is not None
        assert fire.fire_at == due
        assert fire.job.idempotency_key == "schedule:nightly:2026-01-01T10:05:00Z"
        assert fire.job.caller == "schedule:nightly"
        assert fire.job.target == "billing"
        assert fire.job.payload == b'{"run":"nightly"}'
        assert fire.job.headers == {"x-kind": "report"}
        assert fire.job.refusal is None
        assert utc(fire.next_run_at) == "2026-01-01T10:10:00Z"

    def test_missed_fire_times_collapse_into_the_latest(self) -> None:
        # due at 10:05, but nothing ran until 11:02: 12 fire times passed
        fire = plan(record(next_run_at=at(2026, 1, 1, 10, 5)), target(), at(2026, 1, 1, 11, 2))
        assert fire is not None
        assert utc(fire.fire_at) == "2026-01-01T11:00:00Z"
        assert fire.job.idempotency_key == "schedule:nightly:2026-01-01T11:00:00Z"
        assert utc(fire.next_run_at) == "2026-01-01T11:05:00Z"

    def test_a_fire_for_a_disabled_or_missing_target_makes_no_job_and_moves_on(self) -> None:
        due = at(2026, 1, 1, 10, 5)
        for held, says in ((target(enabled=False), "is disabled"), (None, "does not exist")):
            fire = plan(record(next_run_at=due), held, due)
            assert fire is not None
            assert fire.job.refusal is not None and says in fire.job.refusal.detail
            assert utc(fire.next_run_at) == "2026-01-01T10:10:00Z"

    def test_the_guard_is_the_schedule_as_it_was_read(self) -> None:
        due = at(2026, 1, 1, 10, 5)
        fire = plan(record(next_run_at=due), target(), due)
        assert fire is not None
        assert (fire.seen_next_run_at, fire.seen_updated_at) == (due, 1.0)

    def test_the_key_names_the_fire_time_in_utc(self) -> None:
        assert (
            fire_key("a.b-c", at(2026, 3, 29, 3, tz=PARIS)) == "schedule:a.b-c:2026-03-29T01:00:00Z"
        )
