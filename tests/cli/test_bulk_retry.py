"""``csjd jobs retry --failed`` (or ``--state S``) and filters: counted first, confirmed
on a terminal (``--yes`` elsewhere), a dry run that retries nothing, and the tally of
what was retried, what had changed meanwhile (409) and what was gone (404)."""

from __future__ import annotations

import httpx
import respx

from tests.cli.conftest import Csjd, CsjdTty, job, problem

CHANGED = problem(
    409, "The job cannot make this transition", "a queued job cannot be retried", state="queued"
)
CHANGED["type"] = "https://csjd.dev/problems/illegal-transition"
TARGET_GONE = problem(409, "Conflict", "the job's target 'billing' no longer exists")
GONE = problem(404, "Not found", "no job 'f1'")


def _failed(mock_api: respx.MockRouter, n: int, *, page: int = 500) -> list[respx.Route]:
    """``n`` failed jobs to list, ``page`` a page, each retried with a 202."""
    ids = [f"f{i}" for i in range(n)]
    mock_api.get("/jobs/count").respond(200, json={"count": n})

    def listing(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("cursor", "0"))
        limit = min(page, int(request.url.params["limit"]))
        end = start + limit
        items = [job(i, "failed") for i in ids[start:end]]
        return httpx.Response(
            200, json={"items": items, "next_cursor": str(end) if end < n else None}
        )

    mock_api.get("/jobs").mock(side_effect=listing)
    return [
        mock_api.post(f"/jobs/{i}/retry").respond(202, json=job(i, "queued", attempts=0))
        for i in ids
    ]


def test_without_a_terminal_it_asks_for_yes_and_retries_nothing(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    retries = _failed(mock_api, 3)
    run = csjd("jobs", "retry", "--failed", "--target", "billing")
    assert (run.code, run.out) == (2, "")
    assert run.err == (
        "csjd: 3 jobs match state=failed target=billing; nobody here to confirm (not a "
        "terminal): add --yes to retry them, or --dry-run to see them first\n"
    )
    assert [c.request.url.path for c in mock_api.calls] == ["/jobs/count"]
    assert not any(r.called for r in retries)


def test_yes_counts_collects_every_page_then_retries_each(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    retries = _failed(mock_api, 5, page=2)
    run = csjd("jobs", "retry", "--failed", "--target", "billing", "--since", "2h", "--yes")
    assert run.code == 0, run.err
    assert run.out == "retried 5 of 5 jobs\n"
    assert run.err.startswith("5 jobs match state=failed target=billing created_after=")
    assert all(r.call_count == 1 for r in retries)
    calls = [c.request for c in mock_api.calls]
    assert [r.url.path for r in calls[:4]] == ["/jobs/count", "/jobs", "/jobs", "/jobs"]
    count, first = dict(calls[0].url.params), dict(calls[1].url.params)
    assert count == {k: first[k] for k in ("state", "target", "created_after")}
    assert first["limit"] == "500"
    # every id was known before the first retry was sent
    assert all(r.method == "POST" for r in calls[4:]) and len(calls) == 4 + 5


def test_jobs_changed_or_gone_meanwhile_are_counted_not_failed(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    _failed(mock_api, 4)
    mock_api.post("/jobs/f0/retry").respond(409, json=CHANGED)
    mock_api.post("/jobs/f1/retry").respond(404, json=GONE)
    run = csjd("jobs", "retry", "--state", "failed", "--yes")
    assert (run.code, run.err) == (0, "4 jobs match state=failed\n")
    assert run.out == "retried 2 of 4 jobs; 1 already changed (409); 1 gone (404)\n"
    document = csjd("jobs", "retry", "--state", "failed", "--yes", "--json").json()
    assert [j["id"] for j in document["retried"]] == ["f2", "f3"]
    assert (document["already_changed"], document["gone"]) == (["f0"], ["f1"])
    assert (document["errors"], document["not_tried"]) == ([], [])


def test_any_other_refusal_is_reported_and_exits_1(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    _failed(mock_api, 3)
    mock_api.post("/jobs/f1/retry").respond(409, json=TARGET_GONE)
    mock_api.post("/jobs/f2/retry").respond(
        429, json=problem(429, "Backlog full", "the backlog holds 100 jobs")
    )
    run = csjd("jobs", "retry", "--failed", "--yes")
    assert run.code == 1
    assert run.out == "retried 1 of 3 jobs; 2 could not be retried (see below)\n"
    assert run.err.splitlines()[1:] == [
        "f1: Conflict: the job's target 'billing' no longer exists",
        "f2: Backlog full: the backlog holds 100 jobs",
        "csjd: stopped: Backlog full",
    ]


def test_a_dry_run_shows_the_count_and_the_first_few_and_retries_nothing(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    retries = _failed(mock_api, 25)
    run = csjd("jobs", "retry", "--state", "cancelled", "--target", "billing", "--dry-run")
    assert (run.code, run.err) == (0, "and 15 more\n")
    blocks = run.out.split("\n\n")
    assert blocks[0] == "25 jobs match state=cancelled target=billing; a dry run retries none"
    assert [row.split("\t")[0] for row in blocks[1].splitlines()] == [
        "id",
        *(f"f{i}" for i in range(10)),
    ]
    listing = next(c.request for c in mock_api.calls if c.request.url.path == "/jobs")
    assert dict(listing.url.params) == {"state": "cancelled", "target": "billing", "limit": "10"}
    assert not any(r.called for r in retries)
    document = csjd("jobs", "retry", "--state", "cancelled", "--dry-run", "--json").json()
    assert document["count"] == 25 and document["filter"] == {"state": "cancelled"}
    assert len(document["first"]) == 10
    assert not any(r.called for r in retries)


def test_nothing_matching_is_said_and_nothing_listed(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/jobs/count").respond(200, json={"count": 0})
    run = csjd("jobs", "retry", "--failed", "--reason", "expired")
    assert (run.code, run.out) == (0, "0 jobs match state=failed reason=expired: none to retry\n")
    assert [c.request.url.path for c in mock_api.calls] == ["/jobs/count"]


def test_on_a_terminal_it_asks_first(mock_api: respx.MockRouter, csjd_tty: CsjdTty) -> None:
    retries = _failed(mock_api, 2)
    screen = csjd_tty("jobs", "retry", "--failed", typed="y\n")
    assert screen.code == 0
    assert screen.lines[0] == "2 jobs match state=failed. Retry all 2? [y/N] y"
    assert screen.lines[-1] == "retried 2 of 2 jobs"
    assert all(r.call_count == 1 for r in retries)


def test_on_a_terminal_anything_but_yes_retries_nothing(
    mock_api: respx.MockRouter, csjd_tty: CsjdTty
) -> None:
    retries = _failed(mock_api, 1)
    for answer in ("\n", "n\n", "maybe\n"):
        screen = csjd_tty("jobs", "retry", "--failed", typed=answer)
        assert screen.code == 1
        assert screen.lines[0].startswith("1 job matches state=failed. Retry it? [y/N]")
        assert screen.lines[-1] == "csjd: nothing retried"
    assert not any(r.called for r in retries)
    assert {c.request.url.path for c in mock_api.calls} == {"/jobs/count"}


def test_what_to_retry_must_be_said_one_way(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    neither = csjd("jobs", "retry")
    both = csjd("jobs", "retry", "a", "--failed")
    filter_alone = csjd("jobs", "retry", "a", "--target", "billing")
    dry_ids = csjd("jobs", "retry", "a", "--dry-run")
    assert [neither.code, both.code, filter_alone.code, dry_ids.code] == [2, 2, 2, 2]
    assert "give job ids to retry, or --failed (or --state STATE)" in neither.err
    assert "give job ids to retry" in both.err
    assert "go with --failed or --state" in filter_alone.err and "--dry-run" in dry_ids.err
    failed_and_state = csjd("jobs", "retry", "--failed", "--state", "cancelled")
    assert failed_and_state.code == 2 and "not allowed with argument" in failed_and_state.err
    queued = csjd("jobs", "retry", "--state", "queued")
    assert queued.code == 2 and "invalid choice: 'queued'" in queued.err
    assert not mock_api.calls


def test_a_refusal_that_is_not_about_one_job_stops_the_run(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    retries = _failed(mock_api, 4)
    full = problem(429, "Backlog full", "the backlog holds 100000 unfinished jobs")
    retries[1].respond(429, json=full)
    run = csjd("jobs", "retry", "--failed", "--yes")
    assert run.code == 1
    assert run.out == "retried 1 of 4 jobs; 1 could not be retried (see below); 2 not tried\n"
    assert "f1: Backlog full" in run.err and run.err.endswith("csjd: stopped: Backlog full\n")
    assert not retries[2].called and not retries[3].called


def test_no_more_jobs_are_retried_than_were_counted_and_confirmed(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    retries = _failed(mock_api, 5)
    # two more failed between the count and the listing: the newest, listed first
    mock_api.get("/jobs/count").respond(200, json={"count": 3})
    run = csjd("jobs", "retry", "--failed", "--yes")
    assert run.code == 0, run.err
    assert run.out == "retried 3 of 3 jobs\n"
    assert "2 more matched since the count; retrying the 3 counted" in run.err
    assert [r.called for r in retries] == [False, False, True, True, True]
