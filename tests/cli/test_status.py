"""``csjd status``: readiness, backlog by state, breakers, pauses and disabled targets."""

from __future__ import annotations

import httpx
import respx

from tests.cli.conftest import URL, Csjd, problem, target

READY = {"status": "ok", "checks": {"database": "ok", "dispatcher": "ok", "lifecycle": "ok"}}


def _targets() -> list[dict[str, object]]:
    return [
        target(
            "billing",
            breaker="open",
            breaker_reopens_at="2026-01-01T00:00:30.000Z",
            backlog={"scheduled": 1, "queued": 40, "running": 2, "retrying": 7},
        ),
        target(
            "mail",
            paused_until="2026-01-01T00:05:00.000Z",
            inflight=3,
            concurrency_limit=8,
            backlog={"scheduled": 0, "queued": 5, "running": 3, "retrying": 0},
        ),
        target("legacy", enabled=False, disabled_reason="disabled by an operator"),
    ]


def test_status_sums_the_backlog_and_flags_each_target(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/readyz").respond(200, json=READY)
    mock_api.get("/targets").respond(200, json=_targets())
    run = csjd("status")
    assert run.code == 0, run.err
    assert run.out.splitlines()[0] == f"gateway {URL}: ready"
    lines = run.out.splitlines()
    header = lines.index("scheduled\tqueued\trunning\tretrying\ttotal")
    assert lines[header + 1] == "1\t45\t5\t7\t58"
    assert run.row("name") == ["name", "enabled", "breaker", "paused_until", "inflight", "backlog"]
    assert run.row("billing") == [
        "billing",
        "yes",
        "open until 2026-01-01T00:00:30.000Z",
        "",
        "0/16",
        "50",
    ]
    assert run.row("mail") == [
        "mail",
        "yes",
        "closed",
        "2026-01-01T00:05:00.000Z",
        "3/8",
        "8",
    ]
    assert run.row("legacy")[1] == "no (disabled by an operator)"
    assert run.out.splitlines()[-1] == "3 targets: 1 breaker open, 1 paused, 1 disabled"


def test_status_of_a_gateway_that_is_not_ready_exits_1(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/readyz").respond(
        503,
        json=problem(
            503,
            "Service unavailable",
            "not ready (lifecycle: draining)",
            checks={"database": "ok", "lifecycle": "draining"},
        ),
        headers={"Retry-After": "5"},
    )
    mock_api.get("/targets").respond(200, json=[target("billing")])
    run = csjd("status")
    assert run.code == 1
    assert run.out.splitlines()[0] == (
        f"gateway {URL}: NOT READY (not ready (lifecycle: draining))"
    )
    assert run.out.splitlines()[-1] == "1 target, all healthy"


def test_status_with_no_targets(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.get("/readyz").respond(200, json=READY)
    mock_api.get("/targets").respond(200, json=[])
    run = csjd("status")
    assert run.code == 0 and run.out.splitlines()[-1] == "no targets registered"


def test_status_as_json_is_one_document(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.get("/readyz").respond(200, json=READY)
    mock_api.get("/targets").respond(200, json=_targets())
    run = csjd("status", "--json")
    assert run.code == 0
    assert run.json() == {
        "url": URL,
        "ready": True,
        "readyz": READY,
        "backlog": {"scheduled": 1, "queued": 45, "running": 5, "retrying": 7},
        "targets": _targets(),
    }


def _own_counts(counts: dict[str, int]) -> object:
    """``GET /jobs/count`` of a producer holding ``counts`` jobs in each state."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"count": counts.get(request.url.params["state"], 0)})

    return answer


def _forbidden_targets(mock_api: respx.MockRouter) -> None:
    mock_api.get("/readyz").respond(200, json=READY)
    mock_api.get("/targets").respond(
        403, json=problem(403, "Forbidden", "role 'producer' may not use /targets")
    )


def test_status_with_a_producer_key_shows_its_own_jobs(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    _forbidden_targets(mock_api)
    counting = mock_api.get("/jobs/count").mock(
        side_effect=_own_counts({"queued": 2, "failed": 12_345})
    )
    run = csjd("status")
    assert (run.code, run.err) == (0, "")
    assert run.out.split("\n\n") == [
        f"gateway {URL}: ready",
        "scheduled\tqueued\trunning\tretrying\tfailed\n0\t2\t0\t0\t12345",
        "targets and breakers need an admin key; these counts are this key's own jobs\n",
    ]
    asked = [dict(c.request.url.params) for c in counting.calls]
    assert [a["state"] for a in asked] == ["scheduled", "queued", "running", "retrying", "failed"]
    document = csjd("status", "--json").json()
    assert document["ready"] is True and document["targets"] is None
    assert document["jobs"] == {
        "scheduled": 0,
        "queued": 2,
        "running": 0,
        "retrying": 0,
        "failed": 12_345,
    }


def test_status_with_a_producer_key_on_a_gateway_not_ready_exits_1(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/readyz").respond(503, json=problem(503, "Service unavailable", "not ready"))
    mock_api.get("/targets").respond(403, json=problem(403, "Forbidden", "admin only"))
    mock_api.get("/jobs/count").respond(200, json={"count": 0})
    run = csjd("status")
    assert run.code == 1
    assert run.out.splitlines()[0] == f"gateway {URL}: NOT READY (not ready)"
