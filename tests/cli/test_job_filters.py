"""Finding jobs: ``csjd jobs list`` and ``jobs count`` with their filters, times given
as RFC 3339 or as how long ago, paging by cursor, and the API's refusals in one line."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest
import respx

from app.console.parser import when
from tests.cli.conftest import Csjd, CsjdTty, job, problem

NOW = datetime(2026, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        ("2026-01-01T02:00:00+02:00", "2026-01-01T00:00:00Z"),
        ("2026-01-01 00:00:00.250z", "2026-01-01T00:00:00.250000Z"),
        ("90s", "2026-03-01T11:58:30Z"),
        ("15m", "2026-03-01T11:45:00Z"),
        ("2h", "2026-03-01T10:00:00Z"),
        ("3d", "2026-02-26T12:00:00Z"),
        ("1w", "2026-02-22T12:00:00Z"),
    ],
)
def test_a_time_is_rfc3339_or_how_long_ago(given: str, sent: str) -> None:
    assert when(given, NOW) == sent


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("yesterday", "expected a time (RFC 3339, e.g. 2026-01-01T00:00:00Z) or how long ago"),
        ("15 minutes", "expected a time"),
        ("2026-01-01T00:00:00", "needs its offset from UTC"),
        ("2026-01-01", "needs its offset from UTC"),
        ("99999999999d", "is too long ago"),
    ],
)
def test_what_is_not_a_time_is_refused(given: str, why: str) -> None:
    with pytest.raises(
        argparse.ArgumentTypeError, match=why.replace("(", r"\(").replace(")", r"\)")
    ):
        when(given, NOW)


def test_every_filter_goes_to_the_api(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.get("/jobs").respond(200, json={"items": [job("j1")], "next_cursor": None})
    before = datetime.now(UTC)
    run = csjd(
        "jobs", "list", "--state", "failed", "--target", "billing", "--caller", "shop",
        "--reason", "attempts_exhausted", "--since", "2026-01-01T02:00:00+02:00",
        "--until", "2h", "--limit", "20", "--cursor", "c0", "--ordering-key", "acct-42",
    )  # fmt: skip
    assert run.code == 0, run.err
    sent = dict(route.calls.last.request.url.params)
    until = datetime.fromisoformat(sent.pop("created_before"))
    assert before - timedelta(hours=2, seconds=1) <= until <= datetime.now(UTC) - timedelta(hours=2)
    assert sent == {
        "state": "failed",
        "target": "billing",
        "caller": "shop",
        "reason": "attempts_exhausted",
        "created_after": "2026-01-01T00:00:00Z",
        "ordering_key": "acct-42",
        "limit": "20",
        "cursor": "c0",
    }


def test_a_bad_time_is_refused_before_asking(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    run = csjd("jobs", "list", "--since", "yesterday")
    assert run.code == 2
    assert run.err.splitlines()[-1] == (
        "csjd jobs list: error: argument --since: expected a time (RFC 3339, "
        "e.g. 2026-01-01T00:00:00Z) or how long ago (15m, 2h, 3d), got 'yesterday'"
    )
    unknown_reason = csjd("jobs", "count", "--reason", "tired")
    assert unknown_reason.code == 2 and "invalid choice: 'tired'" in unknown_reason.err
    assert not mock_api.calls


def test_the_next_page_is_named_under_the_table(
    mock_api: respx.MockRouter, csjd_tty: CsjdTty
) -> None:
    mock_api.get("/jobs").respond(200, json={"items": [job("j1")], "next_cursor": "MDE5MGEx"})
    screen = csjd_tty("jobs", "list", "--state", "succeeded", columns=80)
    assert screen.code == 0
    assert screen.lines[-1] == (
        "more jobs: add --cursor MDE5MGEx for the next page, or --all for every page"
    )


def test_the_next_page_starts_at_the_cursor(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.get("/jobs").respond(200, json={"items": [job("j0")], "next_cursor": None})
    run = csjd("jobs", "list", "--cursor", "c1", "--all")
    assert run.code == 0 and run.err == ""
    assert dict(route.calls.last.request.url.params) == {"limit": "500", "cursor": "c1"}
    assert [row[0] for row in run.rows()] == ["id", "j0"]


def test_count_takes_the_same_filters(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.get("/jobs/count").respond(200, json={"count": 1234})
    run = csjd("jobs", "count", "--state", "failed", "--target", "billing", "--since", "3d")
    assert (run.code, run.out, run.err) == (0, "1234\n", "")
    sent = dict(route.calls.last.request.url.params)
    assert set(sent) == {"state", "target", "created_after"}
    assert sent["state"] == "failed" and sent["target"] == "billing"
    assert csjd("jobs", "count", "--json").json() == {"count": 1234}


def test_a_refused_filter_is_the_apis_problem_in_one_line(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    too_long = "t" * 64
    mock_api.get("/jobs", params={"target": too_long}).respond(
        422,
        json=problem(
            422,
            "Unprocessable",
            "query.target: String should have at most 63 characters",
            errors=[
                {
                    "loc": ["query", "target"],
                    "msg": "String should have at most 63 characters",
                    "type": "string_too_long",
                }
            ],
        ),
    )
    mock_api.get("/jobs", params={"cursor": "bogus"}).respond(
        400, json=problem(400, "Bad request", "the cursor is not one this server gave out")
    )
    refused = csjd("jobs", "list", "--target", too_long)
    assert (refused.code, refused.out) == (1, "")
    assert refused.err == (
        "csjd: Unprocessable: query.target: String should have at most 63 characters\n"
    )
    cursor = csjd("jobs", "list", "--cursor", "bogus")
    assert cursor.err == "csjd: Bad request: the cursor is not one this server gave out\n"


def test_a_producer_asking_for_another_callers_jobs_is_told_why(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/jobs/count").respond(
        403, json=problem(403, "Forbidden", "the API key 'shop' sees only its own jobs")
    )
    run = csjd("jobs", "count", "--caller", "billing-svc")
    assert run.code == 1
    assert run.err.splitlines() == [
        "csjd: Forbidden: the API key 'shop' sees only its own jobs",
        "hint: the key in CSJD_TOKEN may not do this; managing targets and schedules needs "
        "an admin key, and so do other callers' jobs (csjd keys new NAME --role admin)",
    ]
