"""``csjd jobs list|show|attempts|cancel|retry``: requests, tables, JSON and exit codes."""

from __future__ import annotations

import httpx
import pytest
import respx

from app.console import client
from tests.cli.conftest import TOKEN, URL, Csjd, job, problem


def test_list_passes_the_filters_and_shows_a_row_per_job(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    route = mock_api.get("/jobs").respond(
        200,
        json={
            "items": [
                job(
                    "j2",
                    "failed",
                    attempts=3,
                    max_attempts=3,
                    last_status_code=None,
                    last_error="connection refused",
                    failure_reason="attempts_exhausted",
                ),
                job("j1"),
            ],
            "next_cursor": None,
        },
    )
    run = csjd("jobs", "list", "--state", "failed", "--target", "billing", "--limit", "20")
    assert run.code == 0, run.err
    request = route.calls.last.request
    assert dict(request.url.params) == {"state": "failed", "target": "billing", "limit": "20"}
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert run.rows()[0] == [
        "id",
        "target",
        "state",
        "attempts",
        "reason",
        "last",
        "created_at",
    ]
    assert run.row("j2") == [
        "j2",
        "billing",
        "failed",
        "3/3",
        "attempts_exhausted",
        "connection refused",
        "2026-01-01T00:00:00.000Z",
    ]
    assert run.row("j1")[2:6] == ["succeeded", "1/10", "", "200"]
    assert "more jobs" not in run.out + run.err


def test_list_says_when_there_are_more_pages(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.get("/jobs").respond(200, json={"items": [job("j1")], "next_cursor": "c1"})
    run = csjd("jobs", "list")
    assert run.rows()[1][0] == "j1" and len(run.rows()) == 2
    # nothing but rows on standard output; how to go on goes to standard error
    assert run.err == "more jobs: add --cursor c1 for the next page, or --all for every page\n"


def test_list_as_json_is_the_page(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    page = {"items": [job("j1")], "next_cursor": "c1"}
    mock_api.get("/jobs").respond(200, json=page)
    assert csjd("jobs", "list", "--json").json() == page


def _paged(pages: dict[str | None, dict[str, object]]) -> object:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    return answer


def test_list_all_follows_every_cursor(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.get("/jobs").mock(
        side_effect=_paged(
            {
                None: {"items": [job("j5"), job("j4")], "next_cursor": "c4"},
                "c4": {"items": [job("j3"), job("j2")], "next_cursor": "c2"},
                "c2": {"items": [job("j1")], "next_cursor": None},
            }
        )
    )
    run = csjd("jobs", "list", "--all", "--limit", "2", "--state", "succeeded", "--json")
    assert run.code == 0, run.err
    assert [j["id"] for j in run.json()["items"]] == ["j5", "j4", "j3", "j2", "j1"]
    assert run.json()["next_cursor"] is None
    sent = [dict(call.request.url.params) for call in route.calls]
    assert sent == [
        {"state": "succeeded", "limit": "2"},
        {"state": "succeeded", "limit": "2", "cursor": "c4"},
        {"state": "succeeded", "limit": "2", "cursor": "c2"},
    ]


def test_list_all_shows_every_job_and_no_progress_in_a_pipe(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/jobs").mock(
        side_effect=_paged(
            {
                None: {"items": [job("j2")], "next_cursor": "c2"},
                "c2": {"items": [job("j1")], "next_cursor": None},
            }
        )
    )
    run = csjd("jobs", "list", "--all")
    assert run.code == 0
    assert run.err == ""
    assert [row[0] for row in run.rows()] == ["id", "j2", "j1"]
    assert all(dict(c.request.url.params)["limit"] == "500" for c in mock_api.calls)


def test_attempts_are_a_table(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    attempts = [
        {
            "n": 1,
            "started_at": "2026-01-01T00:00:00.000Z",
            "finished_at": "2026-01-01T00:00:00.100Z",
            "duration_ms": 100.5,
            "status_code": 503,
            "outcome": "retryable",
            "error": "HTTP 503 [upstream]",
            "response_excerpt": "busy",
            "content_type": "text/plain",
            "response_bytes": 4,
        },
        {
            "n": 2,
            "started_at": "2026-01-01T00:00:02.000Z",
            "finished_at": "2026-01-01T00:00:02.010Z",
            "duration_ms": 10.0,
            "status_code": 200,
            "outcome": "success",
            "error": None,
            "response_excerpt": "ok",
        },
    ]
    mock_api.get("/jobs/j1/attempts").respond(200, json=attempts)
    run = csjd("jobs", "attempts", "j1")
    assert run.code == 0
    assert run.rows()[0] == [
        "n",
        "started_at",
        "duration_ms",
        "status",
        "outcome",
        "error",
        "content_type",
        "response_bytes",
        "response",
    ]
    assert run.row("retryable") == [
        "1",
        "2026-01-01T00:00:00.000Z",
        "100.5",
        "503",
        "retryable",
        "HTTP 503 [upstream]",
        "text/plain",
        "4",
        "busy",
    ]
    assert run.row("success")[3:5] == ["200", "success"]
    assert csjd("jobs", "attempts", "j1", "--json").json() == attempts


def test_attempts_are_read_page_after_page(
    mock_api: respx.MockRouter, csjd: Csjd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "ATTEMPTS_PAGE", 2)
    stored = [{"n": n, "outcome": "retryable", "error": "HTTP 503"} for n in range(1, 6)]

    def page(request: httpx.Request) -> httpx.Response:
        after, limit = int(request.url.params["after"]), int(request.url.params["limit"])
        return httpx.Response(200, json=[a for a in stored if a["n"] > after][:limit])

    route = mock_api.get("/jobs/j1/attempts").mock(side_effect=page)
    assert [a["n"] for a in csjd("jobs", "attempts", "j1", "--json").json()] == [1, 2, 3, 4, 5]
    assert [c.request.url.params["after"] for c in route.calls] == ["0", "2", "4"]


def test_cancel_posts_and_shows_the_job(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.post("/jobs/j1/cancel").respond(200, json=job("j1", "cancelled"))
    run = csjd("jobs", "cancel", "j1")
    assert run.code == 0 and route.called
    assert run.line("state").split() == ["state", "cancelled"]


def test_cancel_a_finished_job_is_refused(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.post("/jobs/j1/cancel").respond(
        409,
        json=problem(
            409, "The job cannot make this transition", "a succeeded job cannot be cancelled"
        ),
    )
    run = csjd("jobs", "cancel", "j1")
    assert run.code == 1
    assert run.err == (
        "csjd: The job cannot make this transition: a succeeded job cannot be cancelled\n"
    )


def test_retry_several_ids_continues_past_errors(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    a = mock_api.post("/jobs/a/retry").respond(202, json=job("a", "queued", attempts=0))
    b = mock_api.post("/jobs/b/retry").respond(
        409,
        json=problem(
            409, "The job cannot make this transition", "a succeeded job cannot be retried"
        ),
    )
    c = mock_api.post("/jobs/c/retry").respond(202, json=job("c", "queued", attempts=0))
    run = csjd("jobs", "retry", "a", "b", "c")
    assert a.called and b.called and c.called
    assert run.code == 1
    assert run.out.strip() == "retried 2 of 3 jobs; 1 could not be retried (see below)"
    assert run.err == "b: The job cannot make this transition: a succeeded job cannot be retried\n"


def test_retry_as_json_lists_what_was_retried_and_what_was_not(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.post("/jobs/a/retry").respond(202, json=job("a", "queued"))
    mock_api.post("/jobs/b/retry").respond(404, json=problem(404, "Not found", "no job 'b'"))
    run = csjd("jobs", "retry", "a", "b", "--json")
    assert run.code == 1
    document = run.json()
    assert [j["id"] for j in document["retried"]] == ["a"]
    assert document["errors"] == [{"id": "b", **problem(404, "Not found", "no job 'b'")}]
    assert document["not_tried"] == []
    assert "retrying jobs" not in run.err


def test_retry_stops_when_the_gateway_goes_away(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.post("/jobs/a/retry").respond(202, json=job("a", "queued"))
    mock_api.post("/jobs/b/retry").mock(side_effect=httpx.ConnectError("connection refused"))
    c = mock_api.post("/jobs/c/retry").respond(202, json=job("c", "queued"))
    run = csjd("jobs", "retry", "a", "b", "c")
    assert run.code == 3
    assert not c.called
    assert run.out.strip() == "retried 1 of 3 jobs; 2 not tried"
    assert run.err.startswith(f"csjd: cannot connect to {URL} (connection refused); ")


def test_retry_interrupted_says_how_far_it_got(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.post("/jobs/a/retry").respond(202, json=job("a", "queued"))

    def ctrl_c(request: httpx.Request) -> httpx.Response:
        raise KeyboardInterrupt

    mock_api.post("/jobs/b/retry").mock(side_effect=ctrl_c)
    run = csjd("jobs", "retry", "a", "b", "c", "--json")
    assert run.code == 130
    document = run.json()
    assert [j["id"] for j in document["retried"]] == ["a"]
    assert document["not_tried"] == ["b", "c"]
    assert run.err.strip().endswith("csjd: interrupted")


def test_an_unknown_state_is_refused_before_asking(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    run = csjd("jobs", "list", "--state", "done")
    assert run.code == 2 and "invalid choice" in run.err
    assert not mock_api.calls
