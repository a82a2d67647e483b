"""``csjd jobs show``: the job, its payload and headers, every attempt and its timeline,
on an 80-column terminal, through a pipe and as JSON."""

from __future__ import annotations

import re

import httpx
import pytest
import respx

from app.console import client
from tests.cli.conftest import Csjd, CsjdTty, Screen, attempt, job, problem

JOB_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
NOTE = "deliver before the end of the month, or the invoice is late " * 3
EXCERPT = "<html>\n  <body>\n    <h1>Service Unavailable</h1>\n" + "x" * 400 + "\n</html>"


def _held() -> dict[str, object]:
    """A retrying job, held back by its target's open breaker."""
    return {
        **job(
            JOB_ID,
            "retrying",
            attempts=2,
            caller="shop",
            completed_at=None,
            last_status_code=503,
            last_error="HTTP 503",
            next_attempt_at="2026-01-01T00:01:00.000Z",
            held_by="breaker",
            held_until="2026-01-01T00:02:00.000Z",
        ),
        "payload": {"invoice": "INV-7", "lines": [{"sku": "A-1", "qty": 2}], "note": NOTE},
        "headers": {"X-Tenant": "acme"},
    }


def _attempts() -> list[dict[str, object]]:
    return [
        attempt(
            1,
            status_code=None,
            error="timed out after 10 s",
            duration_ms=10000.0,
            response_excerpt=None,
            content_type=None,
            response_bytes=None,
        ),
        attempt(2, response_excerpt=EXCERPT, content_type="text/html", response_bytes=5120),
    ]


@pytest.fixture
def held(mock_api: respx.MockRouter) -> respx.Route:
    mock_api.get(f"/jobs/{JOB_ID}").respond(200, json=_held())
    return mock_api.get(f"/jobs/{JOB_ID}/attempts").respond(200, json=_attempts())


def _fits(screen: Screen, columns: int) -> None:
    too_long = [line for line in screen.lines if len(line) > columns]
    assert not too_long, "\n".join(screen.lines)


def _cells(line: str) -> list[str]:
    return re.split(r" {2,}", line.strip())


def test_the_page_fits_80_columns_and_tells_the_whole_story(
    held: respx.Route, csjd_tty: CsjdTty
) -> None:
    screen = csjd_tty("jobs", "show", JOB_ID, columns=80)
    assert screen.code == 0
    _fits(screen, 80)
    text = "\n".join(screen.lines)
    assert screen.lines[0] == f"job {JOB_ID}"
    assert _cells(screen.line("caller"))[-1] == "shop"
    assert _cells(screen.line("held_by")) == [
        "held_by",
        "breaker: the target's circuit breaker is open",
    ]
    assert _cells(screen.line("held_until")) == ["held_until", "2026-01-01T00:02:00.000Z"]
    # the payload, pretty, its long string folded onto the next lines
    assert screen.line('"invoice"').strip() == '"invoice": "INV-7",'
    assert screen.line('"qty"').strip() == '"qty": 2'
    assert "".join(line for line in screen.lines if "invoice is late" in line).count("late") >= 2
    assert _cells(screen.line("X-Tenant")) == ["X-Tenant", "acme"]
    # every attempt: its status, how long it took, the outcome, the error and the answer
    assert _cells(screen.line("n", "status", "took")) == [
        "n",
        "status",
        "took",
        "outcome",
        "error",
        "answer",
    ]
    assert _cells(screen.line("10.0 s"))[:5] == [
        "1",
        "-",
        "10.0 s",
        "retryable",
        "timed out after 10 s",
    ]
    second = _cells(screen.line("HTTP 503", "text/html"))
    assert second[:4] == ["2", "503", "120 ms", "retryable"]
    assert second[-1] == "text/html, 5120 bytes"
    # white space made one, folded in its column, cut after 240 characters
    assert _cells(screen.line("<html>"))[-1] == "<html> <body> <h1>Service"
    assert text.count("x") < 240 and screen.lines[screen.lines.index("timeline") - 2].endswith("…")
    # the timeline, from app.core.timeline, down to why it waits now
    accepted = _cells(screen.line("accepted"))
    assert accepted[:2] == ["2026-01-01T00:00:00.000Z", "accepted"]
    assert accepted[2] == "idempotency key"  # and the key on the next line
    assert _cells(screen.line("attempt 2 answered"))[2] == "HTTP 503 in 120 ms (retryable)"
    row = screen.lines.index(screen.line("retrying, next attempt"))
    assert _cells(screen.lines[row])[:2] == ["2026-01-01T00:01:00.000Z", "retrying, next attempt"]
    detail = " ".join(_cells(line)[-1] for line in screen.lines[row:])  # folded in its column
    assert detail == "held: the target's circuit breaker is open until 2026-01-01T00:02:00.000Z"
    assert "\x1b[" in screen.raw  # a terminal gets colours


def test_a_pipe_gets_every_field_in_plain_blocks(held: respx.Route, csjd: Csjd) -> None:
    run = csjd("jobs", "show", JOB_ID)
    assert (run.code, run.err) == (0, "")
    assert not set(run.out) & set("\x1b─│…")
    fields, payload, headers, attempts, story = run.out.rstrip("\n").split("\n\n")
    assert fields.splitlines()[:2] == ["field\tvalue", f"id\t{JOB_ID}"]
    assert "held_by\tbreaker: the target's circuit breaker is open" in fields.splitlines()
    assert "payload\n" not in fields and "headers\t" not in fields
    assert payload.splitlines()[0] == "payload"
    assert f'  "note": "{NOTE}"' in payload.splitlines()  # whole, not folded
    assert headers.splitlines() == ["header\tvalue", "X-Tenant\tacme"]
    rows = [line.split("\t") for line in attempts.splitlines()]
    assert rows[0] == [
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
    assert rows[1][:7] == [
        "1",
        "2026-01-01T00:00:01.000Z",
        "10000.0",
        "",
        "retryable",
        "timed out after 10 s",
        "",
    ]
    assert rows[2][6:8] == ["text/html", "5120"]
    assert rows[2][8] == EXCERPT.replace("\n", "\\n")  # whole, its line breaks escaped
    events = [line.split("\t") for line in story.splitlines()]
    assert events[0] == ["at", "event", "detail"]
    assert [e[1] for e in events[1:]] == [
        "accepted",
        "attempt 1 sent",
        "attempt 1 answered",
        "attempt 2 sent",
        "attempt 2 answered",
        "retrying, next attempt",
    ]
    assert events[3][2] == "timed out after 10 s in 10000 ms (retryable)"


def test_json_is_the_job_with_its_attempts(held: respx.Route, csjd: Csjd) -> None:
    run = csjd("jobs", "show", JOB_ID, "--json")
    assert run.code == 0
    assert run.json() == {**_held(), "attempt_list": _attempts()}


def test_every_page_of_attempts_is_read(
    mock_api: respx.MockRouter, csjd: Csjd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "ATTEMPTS_PAGE", 2)
    stored = [attempt(n) for n in range(1, 6)]

    def page(request: httpx.Request) -> httpx.Response:
        after, limit = int(request.url.params["after"]), int(request.url.params["limit"])
        return httpx.Response(200, json=[a for a in stored if a["n"] > after][:limit])

    mock_api.get("/jobs/j1").respond(200, json={**job("j1", attempts=5), "payload": {}})
    route = mock_api.get("/jobs/j1/attempts").mock(side_effect=page)
    run = csjd("jobs", "show", "j1", "--json")
    assert [a["n"] for a in run.json()["attempt_list"]] == [1, 2, 3, 4, 5]
    assert [c.request.url.params["after"] for c in route.calls] == ["0", "2", "4"]
    assert csjd("jobs", "show", "j1").out.count("attempt 5 answered") == 1


def test_a_job_not_yet_tried_says_so(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    queued = job("j1", "queued", attempts=0, completed_at=None, last_status_code=None)
    mock_api.get("/jobs/j1").respond(200, json={**queued, "payload": [1, 2], "headers": {}})
    mock_api.get("/jobs/j1/attempts").respond(200, json=[])
    blocks = csjd("jobs", "show", "j1").out.rstrip("\n").split("\n\n")
    assert blocks[2:4] == ["no headers of its own", "no attempts yet"]
    assert blocks[4].splitlines()[-1].split("\t")[1] == "queued, due"


def test_an_unknown_job_is_one_line_and_exit_1(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.get("/jobs/nope").respond(404, json=problem(404, "Not found", "no job 'nope'"))
    attempts = mock_api.get("/jobs/nope/attempts").respond(200, json=[])
    run = csjd("jobs", "show", "nope")
    assert (run.code, run.out, run.err) == (1, "", "csjd: Not found: no job 'nope'\n")
    assert not attempts.called


def test_a_job_gone_between_its_two_reads_is_unknown_too(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/jobs/j1").respond(200, json=job("j1"))
    mock_api.get("/jobs/j1/attempts").respond(404, json=problem(404, "Not found", "no job 'j1'"))
    run = csjd("jobs", "show", "j1")
    assert (run.code, run.out, run.err) == (1, "", "csjd: Not found: no job 'j1'\n")
