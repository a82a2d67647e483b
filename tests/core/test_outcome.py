import email.utils

import pytest

from app.core.outcome import (
    FailureKind,
    Outcome,
    classify_failure,
    classify_response,
    describe_failure,
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


@pytest.mark.parametrize(
    ("kind", "shown"),
    [
        (FailureKind.TIMEOUT, "timed out after 10 s"),
        (FailureKind.CONNECTION_REFUSED, "connection refused"),
        (FailureKind.CONNECTION_RESET, "connection reset"),
        (FailureKind.DNS, "DNS lookup failed"),
        (FailureKind.TLS, "TLS handshake failed"),
        (FailureKind.INVALID_RESPONSE, "invalid HTTP response"),
        (FailureKind.PRIVATE_ADDRESS, "address refused (private network)"),
        (FailureKind.INTERNAL, "internal error in csjd"),
    ],
)
def test_no_answer_at_all_is_retryable_counted_and_named_by_its_kind_alone(
    kind: FailureKind, shown: str
) -> None:
    result = classify_failure(kind, timeout_s=10)
    assert (result.outcome, result.counted) == (Outcome.RETRYABLE, True)
    assert result.error == shown
    assert result.timed_out is (kind is FailureKind.TIMEOUT)


def test_every_failure_kind_has_a_text_for_producers() -> None:
    assert all(describe_failure(kind, 10) for kind in FailureKind)


@pytest.mark.parametrize(
    ("timeout_s", "shown"),
    [
        (0.5, "timed out after 0.5 s"),
        (10.0, "timed out after 10 s"),
        (0.1, "timed out after 0.1 s"),
    ],
)
def test_a_timeout_names_the_targets_deadline(timeout_s: float, shown: str) -> None:
    assert describe_failure(FailureKind.TIMEOUT, timeout_s) == shown


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
