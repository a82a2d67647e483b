import email.utils

import pytest

from app.core.outcome import (
    FailureKind,
    Outcome,
    classify_failure,
    classify_response,
    parse_retry_after,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "retry_after", "outcome", "counted"),
    [
        (200, None, Outcome.SUCCESS, True),
        (201, None, Outcome.SUCCESS, True),
        (299, None, Outcome.SUCCESS, True),
        (429, None, Outcome.THROTTLED, False),
        (429, "3", Outcome.THROTTLED, False),
        (503, "3", Outcome.THROTTLED, False),
        (503, None, Outcome.RETRYABLE, True),
        (500, None, Outcome.RETRYABLE, True),
        (502, "3", Outcome.RETRYABLE, True),
        (408, None, Outcome.RETRYABLE, True),
        (425, None, Outcome.RETRYABLE, True),
        (410, None, Outcome.PERMANENT, True),
        (400, None, Outcome.PERMANENT, True),
        (404, None, Outcome.PERMANENT, True),
        (301, None, Outcome.PERMANENT, True),
        (302, None, Outcome.PERMANENT, True),
    ],
)
def test_the_outcome_table(
    status: int, retry_after: str | None, outcome: Outcome, counted: bool
) -> None:
    result = classify_response(status, retry_after, NOW)
    assert (result.outcome, result.counted) == (outcome, counted)
    assert result.gone is (status == 410)


@pytest.mark.parametrize("kind", list(FailureKind))
def test_no_answer_at_all_is_retryable_and_counted(kind: FailureKind) -> None:
    result = classify_failure(kind, "boom")
    assert (result.outcome, result.counted) == (Outcome.RETRYABLE, True)
    assert result.error == f"{kind.value}: boom"
    assert result.timed_out is (kind is FailureKind.TIMEOUT)


def test_retry_after_in_seconds_is_clamped_to_one_second_and_one_hour() -> None:
    assert parse_retry_after("0", NOW) == 1.0
    assert parse_retry_after("30", NOW) == 30.0
    assert parse_retry_after("99999", NOW) == 3600.0


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(NOW + 120, usegmt=True)
    assert parse_retry_after(when, NOW) == pytest.approx(120.0)
    past = email.utils.formatdate(NOW - 120, usegmt=True)
    assert parse_retry_after(past, NOW) == 1.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5"])
def test_unreadable_retry_after_means_back_off(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None
