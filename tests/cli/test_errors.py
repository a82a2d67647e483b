"""What every command does when the gateway refuses, fails or cannot be reached."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import respx

from tests.cli.conftest import TOKEN, URL, Csjd, problem
from tests.e2e.gateway import free_port


def test_an_unreachable_gateway_exits_3_and_names_csjd_url(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/targets").mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    run = csjd("targets", "list")
    assert run.code == 3 and run.out == ""
    assert run.err == (
        f"csjd: cannot connect to {URL} (connection refused); "
        "is it running, and is CSJD_URL (or --url) its address?\n"
    )


def test_a_gateway_that_does_not_answer_in_time_exits_3(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/jobs/j1").mock(side_effect=httpx.ReadTimeout("timed out"))
    run = csjd("jobs", "show", "j1")
    assert run.code == 3
    assert run.err.startswith(f"csjd: no answer from {URL} within 30 s; ")
    assert "ReadTimeout" not in run.err


def test_nothing_listening_exits_3(csjd: Csjd) -> None:
    """A real refused connection, no mock: a port that was free a moment ago."""
    url = f"http://127.0.0.1:{free_port()}"
    run = csjd("status", env={"CSJD_URL": url})
    assert run.code == 3
    assert run.err == (
        f"csjd: cannot connect to {url} (connection refused); "
        "is it running, and is CSJD_URL (or --url) its address?\n"
    )


def test_a_host_that_does_not_resolve_says_so(csjd: Csjd) -> None:
    """A real lookup of a name that cannot exist (RFC 6761 reserves .invalid)."""
    run = csjd("jobs", "list", env={"CSJD_URL": "http://csjd.invalid:8080"})
    assert run.code == 3
    assert run.err.startswith(
        "csjd: cannot connect to http://csjd.invalid:8080 (DNS lookup failed)"
    )


def test_a_connection_dropped_without_an_answer_says_so(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/targets").mock(
        side_effect=httpx.RemoteProtocolError("Server disconnected without sending a response.")
    )
    run = csjd("targets", "list")
    assert run.code == 3
    assert run.err.startswith(f"csjd: lost the connection to {URL} (closed without an answer); ")


def test_an_unrecognised_failure_names_no_library_internals(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/targets").mock(side_effect=httpx.ConnectError("ssl:default [something odd]"))
    run = csjd("targets", "list")
    assert run.err.startswith(f"csjd: cannot connect to {URL} (connection failed); ")
    assert "ssl:default" not in run.err


def test_a_missing_token_hints_at_csjd_token(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.get("/jobs").respond(
        401,
        json=problem(401, "Unauthenticated", "send an API key as 'Authorization: Bearer <token>'"),
        headers={"WWW-Authenticate": 'Bearer realm="csjd"'},
    )
    run = csjd("jobs", "list", env={"CSJD_URL": URL})
    assert "Authorization" not in route.calls.last.request.headers
    assert run.code == 1
    assert run.err.splitlines() == [
        "csjd: Unauthenticated: send an API key as 'Authorization: Bearer <token>'",
        "hint: the gateway wants an API token: set CSJD_TOKEN (or --token)",
    ]


def test_a_wrong_token_hints_at_checking_it(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.get("/jobs").respond(401, json=problem(401, "Unauthenticated", "unknown token"))
    run = csjd("jobs", "list")
    assert run.code == 1
    assert "hint: the gateway does not know this token: check CSJD_TOKEN" in run.err


def test_a_producer_key_on_targets_hints_at_an_admin_key(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/targets").respond(
        403, json=problem(403, "Forbidden", "role 'producer' may not use /targets")
    )
    run = csjd("targets", "list")
    assert run.code == 1
    assert run.err.splitlines()[0] == "csjd: Forbidden: role 'producer' may not use /targets"
    assert "managing targets and schedules needs an admin key" in run.err


def test_the_console_options_go_before_or_after_the_command(csjd: Csjd) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get("http://flag.test/readyz").respond(200, json={"status": "ok"})
        router.get("http://flag.test/targets").respond(200, json=[])
        before = csjd("--url", "http://flag.test", "--token", "t1", "--json", "status")
        after = csjd("status", "--url", "http://flag.test", "--token", "t1", "--json")
    assert before.code == after.code == 0, before.err
    assert before.json() == after.json()
    assert before.json()["url"] == "http://flag.test"
    assert [c.request.headers["Authorization"] for c in route.calls] == ["Bearer t1"] * 2


def test_the_innermost_option_wins(csjd: Csjd) -> None:
    empty = {"items": [], "next_cursor": None}
    with respx.mock(assert_all_mocked=True) as router:
        inner = router.get("http://inner.test/jobs").respond(200, json=empty)
        middle = router.get("http://middle.test/jobs").respond(200, json=empty)
        outer = ("--url", "http://outer.test", "--token", "outer")
        three = csjd(
            *outer, "jobs", "--url", "http://middle.test", "list", "--url", "http://inner.test"
        )
        two = csjd(*outer, "jobs", "--url", "http://middle.test", "--token", "middle", "list")
    assert three.code == two.code == 0
    assert inner.call_count == middle.call_count == 1
    assert inner.calls.last.request.headers["Authorization"] == "Bearer outer"
    assert middle.calls.last.request.headers["Authorization"] == "Bearer middle"


def test_the_gateway_address_before_targets_put(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    """Given first, ``--url`` is the gateway's; after ``put`` it is the target's."""
    route = mock_api.put("http://other.test:9000/targets/billing").respond(201, json={})
    run = csjd(
        "--url", "http://other.test:9000", "targets", "put", "billing", "--url", "https://x.test/h"
    )
    assert run.code == 0, run.err
    assert json.loads(route.calls.last.request.content) == {"url": "https://x.test/h"}


def test_console_options_are_refused_for_other_commands(csjd: Csjd) -> None:
    run = csjd("--url", "http://x.test", "migrate")
    assert run.code == 2
    assert "--url: only for targets, schedules, jobs, status" in run.err


def test_flags_win_over_the_environment(csjd: Csjd) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get("http://flag.test/targets").respond(200, json=[])
        run = csjd("targets", "list", "--url", "http://flag.test", "--token", "from-flag")
    assert run.code == 0
    assert route.calls.last.request.headers["Authorization"] == "Bearer from-flag"
    assert TOKEN not in str(route.calls.last.request.headers)


def test_an_answer_that_is_not_a_problem_still_reads_well(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/targets").respond(502, text="<html>upstream down</html>")
    run = csjd("targets", "list")
    assert run.code == 1
    assert run.err == "csjd: Bad Gateway: <html>upstream down</html>\n"


def test_a_success_that_is_not_json_is_not_taken_for_an_answer(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/targets").respond(200, text="<html>a proxy's login page</html>")
    run = csjd("targets", "list")
    assert run.code == 1
    assert (
        run.err
        == "csjd: Not a csjd answer: /targets answered text/plain; charset=utf-8, not JSON\n"
    )


def test_a_csjd_url_that_is_not_http_is_a_usage_error(csjd: Csjd) -> None:
    run = csjd("status", env={"CSJD_URL": "localhost:8080"})
    assert run.code == 2
    assert "must be an http:// or https:// address" in run.err


def test_serve_does_not_load_the_console() -> None:
    """Building the parser for ``csjd serve`` imports neither httpx nor rich."""
    code = (
        "import sys, app.cli; app.cli.build_parser().parse_args(['serve']); "
        "print(sorted(m for m in ('httpx', 'rich', 'app.console.actions') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
