"""How results look: tables fitted to a real terminal's width, tab-separated
lines through a pipe, and no progress left behind once a command is done."""

from __future__ import annotations

import re

import httpx
import respx

from tests.cli.conftest import Csjd, CsjdTty, Screen, job, target

FAILED_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
DONE_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"
LONG_ERROR = "timed out after 10 s while the target kept the connection open " * 2
SPINNER = set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏━")


def _targets() -> list[dict[str, object]]:
    return [
        target(
            "billing-eu-west-invoices",
            breaker="open",
            breaker_reopens_at="2026-01-01T00:00:30.000Z",
            concurrency_limit=3,
            inflight=2,
            backlog={"scheduled": 1, "queued": 40, "running": 2, "retrying": 7},
        ),
        target("mail", paused_until="2026-01-01T00:05:00.000Z"),
        target("legacy", enabled=False, disabled_reason="the target answered 410 Gone"),
    ]


def _jobs() -> list[dict[str, object]]:
    return [
        job(
            FAILED_ID,
            "failed",
            attempts=3,
            max_attempts=3,
            last_status_code=None,
            last_error=LONG_ERROR,
            failure_reason="attempts_exhausted",
        ),
        job(DONE_ID),
    ]


def _cells(line: str) -> list[str]:
    """A row's first line on a terminal: cells are at least two spaces apart."""
    return re.split(r" {2,}", line.strip())


def _fits(screen: Screen, columns: int) -> None:
    too_long = [line for line in screen.lines if len(line) > columns]
    assert not too_long, "\n".join(screen.lines)


# -- on a terminal ---------------------------------------------------------------------


def test_targets_list_fits_80_columns_with_names_whole(
    mock_api: respx.MockRouter, csjd_tty: CsjdTty
) -> None:
    mock_api.get("/targets").respond(200, json=_targets())
    screen = csjd_tty("targets", "list", columns=80)
    assert screen.code == 0
    _fits(screen, 80)
    assert _cells(screen.line("name", "state")) == ["name", "state", "inflight", "backlog"]
    billing = _cells(screen.line("billing-eu-west-invoices"))
    assert billing[0] == "billing-eu-west-invoices"
    assert billing[1].startswith("breaker open until") and billing[2:] == ["2/3", "50"]
    assert _cells(screen.line("mail "))[1:] == ["paused until", "0/16", "0"]
    assert _cells(screen.line("legacy"))[0] == "legacy"
    # folded onto the next line, whole
    assert "2026-01-01T00:00:30.000Z" in [line.strip() for line in screen.lines]
    assert "\x1b[" in screen.raw  # a terminal gets styles


def test_jobs_list_fits_80_columns_with_ids_whole(
    mock_api: respx.MockRouter, csjd_tty: CsjdTty
) -> None:
    mock_api.get("/jobs").respond(200, json={"items": _jobs(), "next_cursor": "c"})
    screen = csjd_tty("jobs", "list", columns=80)
    assert screen.code == 0
    _fits(screen, 80)
    assert _cells(screen.line("id", "target")) == ["id", "target", "state", "attempts", "last"]
    failed = _cells(screen.line(FAILED_ID))
    assert failed[:4] == [FAILED_ID, "billing", "failed", "3/3"]
    assert failed[4].startswith("timed out") and failed[4].endswith("…")
    assert _cells(screen.line(DONE_ID)) == [DONE_ID, "billing", "succeeded", "1/10", "200"]
    assert (
        screen.lines[-1] == "more jobs: add --cursor c for the next page, or --all for every page"
    )


def test_a_narrow_terminal_leaves_columns_out_but_keeps_ids_whole(
    mock_api: respx.MockRouter, csjd_tty: CsjdTty
) -> None:
    mock_api.get("/jobs").respond(200, json={"items": _jobs(), "next_cursor": None})
    screen = csjd_tty("jobs", "list", columns=60)
    _fits(screen, 60)
    assert _cells(screen.line("id", "target")) == ["id", "target", "state"]
    assert _cells(screen.line(FAILED_ID)) == [FAILED_ID, "billing", "failed"]


def test_wide_shows_every_column_on_one_line_a_row(
    mock_api: respx.MockRouter, csjd_tty: CsjdTty
) -> None:
    mock_api.get("/jobs").respond(200, json={"items": _jobs(), "next_cursor": None})
    screen = csjd_tty("jobs", "list", "--wide", columns=80)
    header = ["id", "target", "state", "attempts", "reason", "last", "created_at"]
    assert _cells(screen.line("id", "target")) == header
    failed = _cells(screen.line(FAILED_ID))
    assert failed[:5] == [FAILED_ID, "billing", "failed", "3/3", "attempts_exhausted"]
    assert failed[6] == "2026-01-01T00:00:00.000Z"
    assert _cells(screen.line(DONE_ID))[4:] == ["-", "200", "2026-01-01T00:00:00.000Z"]


def test_wide_fits_a_terminal_wide_enough(mock_api: respx.MockRouter, csjd_tty: CsjdTty) -> None:
    mock_api.get("/targets").respond(200, json=_targets())
    screen = csjd_tty("--wide", "targets", "list", columns=240)
    _fits(screen, 240)
    assert len(_cells(screen.line("name", "url"))) == 11
    assert "https://billing-eu-west-invoices.example.com/hook" in screen.line("billing-eu")


def test_attempts_and_status_fit_80_columns(mock_api: respx.MockRouter, csjd_tty: CsjdTty) -> None:
    attempt = {
        "n": 1,
        "started_at": "2026-01-01T00:00:00.000Z",
        "duration_ms": 10000.0,
        "status_code": None,
        "outcome": "retryable",
        "error": LONG_ERROR,
        "response_excerpt": None,
    }
    mock_api.get(f"/jobs/{FAILED_ID}/attempts").respond(200, json=[attempt])
    mock_api.get("/readyz").respond(200, json={"status": "ok", "checks": {}})
    mock_api.get("/targets").respond(200, json=_targets())
    attempts = csjd_tty("jobs", "attempts", FAILED_ID, columns=80)
    _fits(attempts, 80)
    assert _cells(attempts.line("started_at")) == ["n", "started_at", "status", "outcome", "error"]
    first = _cells(attempts.line("retryable"))
    assert first[:4] == ["1", "2026-01-01T00:00:00.000Z", "-", "retryable"]
    assert first[4].startswith("timed out")
    status = csjd_tty("status", columns=80)
    _fits(status, 80)
    assert _cells(status.line("billing-eu-west-invoices"))[2:] == ["2/3", "50"]
    assert status.lines[-1] == "3 targets: 1 breaker open, 1 paused, 1 disabled"


def test_a_record_fits_80_columns(mock_api: respx.MockRouter, csjd_tty: CsjdTty) -> None:
    mock_api.post(f"/jobs/{FAILED_ID}/cancel").respond(200, json=_jobs()[0])
    screen = csjd_tty("jobs", "cancel", FAILED_ID, columns=80)
    _fits(screen, 80)
    assert screen.lines[0] == f"job {FAILED_ID}"
    assert _cells(screen.line("failure_reason")) == ["failure_reason", "attempts_exhausted"]


def test_progress_is_erased_once_done(mock_api: respx.MockRouter, csjd_tty: CsjdTty) -> None:
    failed = [job(f"f{i}", "failed") for i in range(3)]
    mock_api.get("/jobs/count").respond(200, json={"count": 3})
    mock_api.get("/jobs").respond(200, json={"items": failed, "next_cursor": None})
    for i in range(3):
        mock_api.post(f"/jobs/f{i}/retry").respond(202, json=job(f"f{i}", "queued"))
    screen = csjd_tty("jobs", "retry", "--failed", "--yes")
    assert screen.code == 0
    assert "fetching jobs" in screen.raw and "retrying jobs" in screen.raw  # it was shown
    assert screen.lines == ["3 jobs match state=failed", "retried 3 of 3 jobs"]
    assert not SPINNER & set("".join(screen.lines))


def test_progress_is_erased_when_the_gateway_goes_away(
    mock_api: respx.MockRouter, csjd_tty: CsjdTty
) -> None:
    mock_api.post("/jobs/a/retry").respond(202, json=job("a", "queued"))
    mock_api.post("/jobs/b/retry").mock(side_effect=httpx.ConnectError("connection refused"))
    screen = csjd_tty("jobs", "retry", "a", "b", "c")
    assert screen.code == 3
    assert screen.lines[0] == "retried 1 of 3 jobs; 2 not tried"
    assert screen.lines[1].startswith("csjd: cannot connect to")
    assert not SPINNER & set("".join(screen.lines))


# -- through a pipe --------------------------------------------------------------------


def test_a_pipe_gets_tab_separated_rows_that_grep_finds(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/jobs").respond(200, json={"items": _jobs(), "next_cursor": None})
    run = csjd("jobs", "list")
    assert run.code == 0 and run.err == ""
    assert not set(run.out) & set("\x1b─│┃…")
    header, *rows = run.rows()
    assert header == ["id", "target", "state", "attempts", "reason", "last", "created_at"]
    assert all(len(row) == len(header) for row in rows)
    grepped = [line for line in run.out.splitlines() if "failed" in line]
    assert [line.split("\t")[0] for line in grepped] == [FAILED_ID]
    assert grepped[0].split("\t")[5] == LONG_ERROR  # nothing cut
    assert rows[1][4] == ""  # no reason: an empty cell, not a placeholder


def test_a_pipe_escapes_tabs_and_line_breaks_in_values(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    odd = job("j1", "retrying", last_status_code=None, last_error="first\tsecond\nthird\\")
    mock_api.get("/jobs").respond(200, json={"items": [odd], "next_cursor": None})
    rows = csjd("jobs", "list").rows()
    assert len(rows) == 2 and len(rows[1]) == len(rows[0])
    assert rows[1][5] == "first\\tsecond\\nthird\\\\"


def test_a_pipe_gets_every_target_column_and_status_in_blocks(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/targets").respond(200, json=_targets())
    mock_api.get("/readyz").respond(200, json={"status": "ok", "checks": {}})
    listed = csjd("targets", "list")
    assert len(listed.rows()[0]) == 11
    assert listed.row("billing-eu-west")[1] == "https://billing-eu-west-invoices.example.com/hook"
    status = csjd("status")
    blocks = status.out.split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [
        "gateway http://gateway.test:8080: ready",
        "scheduled\tqueued\trunning\tretrying\ttotal",
        "name\tenabled\tbreaker\tpaused_until\tinflight\tbacklog",
        "3 targets: 1 breaker open, 1 paused, 1 disabled",
    ]
