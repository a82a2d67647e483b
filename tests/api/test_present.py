"""Times in the API: RFC 3339, UTC, milliseconds, rounded as ``datetime`` rounds."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from app.api.present import rfc3339


def reference(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1.9999999, "1970-01-01T00:00:02.000Z"),  # rounds up into the next second
        (1764288000.5, "2025-11-28T00:00:00.500Z"),
        (1764288000.0019, "2025-11-28T00:00:00.001Z"),  # milliseconds are cut, not rounded
    ],
)
def test_known_times(ts: float, text: str) -> None:
    assert rfc3339(ts) == text == reference(ts)


def test_agrees_with_datetime_on_many_times() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        ts = round(rng.uniform(0, 4e9), rng.choice((3, 6, 9)))
        assert rfc3339(ts) == reference(ts), ts


def test_none_stays_none() -> None:
    assert rfc3339(None) is None


def test_a_time_written_again_reads_the_same_and_the_next_is_its_own() -> None:
    times = [1764288000.5, 1764288000.5, 1764288000.501, 0.0, 0.0, 1764288000.5]
    assert [rfc3339(ts) for ts in times] == [reference(ts) for ts in times]
