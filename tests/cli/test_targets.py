"""``csjd targets list|show|put|delete``: what is sent, and what the operator reads."""

from __future__ import annotations

import json
from pathlib import Path

import respx

from tests.cli.conftest import TOKEN, Csjd, problem, target


def test_list_shows_every_target_with_its_live_state(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    route = mock_api.get("/targets").respond(
        200,
        json=[
            target(
                "billing",
                breaker="open",
                breaker_reopens_at="2026-01-01T00:00:30.000Z",
                concurrency_limit=3,
                inflight=2,
                backlog={"scheduled": 1, "queued": 40, "running": 2, "retrying": 7},
            ),
            target("mail", paused_until="2026-01-01T00:05:00.000Z"),
            target("legacy", enabled=False, disabled_reason="the target answered 410 Gone"),
        ],
    )
    run = csjd("targets", "list")
    assert run.code == 0, run.err
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert run.rows()[0] == [
        "name",
        "url",
        "enabled",
        "breaker",
        "paused_until",
        "limit",
        "inflight",
        "scheduled",
        "queued",
        "running",
        "retrying",
    ]
    assert run.row("billing") == [
        "billing",
        "https://billing.example.com/hook",
        "yes",
        "open until 2026-01-01T00:00:30.000Z",
        "",
        "3/16",
        "2",
        "1",
        "40",
        "2",
        "7",
    ]
    assert "2026-01-01T00:05:00.000Z" in run.line("mail")
    assert run.row("legacy")[2] == "no (the target answered 410 Gone)"
    assert len(run.rows()) == 4


def test_list_as_json_is_the_api_answer(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    body = [target("billing"), target("mail")]
    mock_api.get("/targets").respond(200, json=body)
    run = csjd("targets", "list", "--json")
    assert run.code == 0 and run.json() == body and run.err == ""


def test_show_prints_settings_and_live_state(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    body = target("billing", inflight=4)
    body["headers"] = {"X-Tenant": "********"}
    mock_api.get("/targets/billing").respond(200, json=body)
    run = csjd("targets", "show", "billing")
    assert run.code == 0
    assert run.line("url").split() == ["url", "https://billing.example.com/hook"]
    assert run.line("headers").split() == ["headers", "X-Tenant=********"]
    assert run.line("inflight").split() == ["inflight", "4"]
    assert run.line("backlog").split()[0] == "backlog"


def test_show_an_unknown_target_prints_the_problem(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.get("/targets/nope").respond(
        404, json=problem(404, "Not found", "no target named 'nope'")
    )
    run = csjd("targets", "show", "nope")
    assert run.code == 1
    assert run.out == ""
    assert run.err == "csjd: Not found: no target named 'nope'\n"


def test_put_sends_the_flags_as_the_body(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.put("/targets/billing").respond(201, json=target("billing"))
    run = csjd(
        "targets",
        "put",
        "billing",
        "--url",
        "https://billing.example.com/hook",
        "--timeout-s",
        "2.5",
        "--max-concurrency",
        "4",
        "--max-attempts",
        "3",
        "--secret",
        "whsec_abc",
        "--header",
        "X-Tenant=acme",
        "--header",
        "X-Env=a=b",
        "--disabled",
    )
    assert run.code == 0, run.err
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.content) == {
        "url": "https://billing.example.com/hook",
        "timeout_s": 2.5,
        "max_concurrency": 4,
        "max_attempts": 3,
        "secret": "whsec_abc",
        "headers": {"X-Tenant": "acme", "X-Env": "a=b"},
        "enabled": False,
    }
    assert run.out.splitlines()[0] == "created target billing"


def test_put_over_an_existing_target_says_replaced(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.put("/targets/billing").respond(200, json=target("billing"))
    run = csjd("targets", "put", "billing", "--url", "https://billing.example.com/hook")
    assert run.code == 0 and run.out.splitlines()[0] == "replaced target billing"


def test_put_reads_a_yaml_file_and_flags_override_it(
    mock_api: respx.MockRouter, csjd: Csjd, tmp_path: Path
) -> None:
    route = mock_api.put("/targets/billing").respond(200, json=target("billing"))
    spec = tmp_path / "billing.yaml"
    spec.write_text(
        "url: https://old.example.com/hook\nmax_attempts: 5\nheaders:\n  X-Tenant: acme\n"
    )
    run = csjd(
        "targets",
        "put",
        "billing",
        "--file",
        str(spec),
        "--url",
        "https://new.example.com/hook",
        "--header",
        "X-Env=prod",
    )
    assert run.code == 0, run.err
    assert json.loads(route.calls.last.request.content) == {
        "url": "https://new.example.com/hook",
        "max_attempts": 5,
        "headers": {"X-Tenant": "acme", "X-Env": "prod"},
    }


def test_put_reads_json_from_standard_input(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.put("/targets/billing").respond(201, json=target("billing"))
    body = {"url": "https://billing.example.com/hook", "rate_limit_per_s": 50}
    run = csjd("targets", "put", "billing", "--file", "-", "--json", stdin=json.dumps(body))
    assert run.code == 0
    assert json.loads(route.calls.last.request.content) == body
    assert run.json() == target("billing")


def test_put_without_a_url_is_a_usage_error(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    run = csjd("targets", "put", "billing", "--max-attempts", "3")
    assert run.code == 2
    assert "--url URL, or --file FILE" in run.err
    assert not mock_api.calls


def test_put_with_an_unreadable_file_is_a_usage_error(
    mock_api: respx.MockRouter, csjd: Csjd, tmp_path: Path
) -> None:
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    missing = csjd("targets", "put", "billing", "--file", str(tmp_path / "none.yaml"))
    not_a_mapping = csjd("targets", "put", "billing", "--file", str(tmp_path / "list.yaml"))
    (tmp_path / "bad.json").write_text("{url: ")
    broken = csjd("targets", "put", "billing", "--file", str(tmp_path / "bad.json"))
    assert [missing.code, not_a_mapping.code, broken.code] == [2, 2, 2]
    assert "cannot read" in missing.err
    assert "must hold one target" in not_a_mapping.err
    assert "not valid JSON or YAML" in broken.err
    assert not mock_api.calls


def test_a_header_flag_without_a_value_is_refused(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    run = csjd("targets", "put", "billing", "--url", "https://x.example", "--header", "X-Tenant")
    assert run.code == 2 and "expected NAME=VALUE" in run.err
    assert not mock_api.calls


def test_put_refused_by_validation_lists_each_field(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.put("/targets/billing").respond(
        422,
        json=problem(
            422,
            "Invalid request",
            "body.timeout_s: Input should be less than or equal to 300",
            errors=[
                {
                    "loc": ["body", "timeout_s"],
                    "msg": "Input should be less than or equal to 300",
                    "type": "less_than_equal",
                },
                {"loc": ["body", "max_attempts"], "msg": "too many", "type": "x"},
            ],
        ),
        headers={"Content-Type": "application/problem+json"},
    )
    run = csjd("targets", "put", "billing", "--url", "https://x.example", "--timeout-s", "999")
    assert run.code == 1
    assert run.err.splitlines() == [
        "csjd: Invalid request: body.timeout_s: Input should be less than or equal to 300",
        "  max_attempts: too many",
    ]


def test_the_gateway_address_goes_before_put(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    """``put --url`` is the target's URL; the gateway's is given to ``targets``."""
    other = mock_api.put("http://other.test:9000/targets/billing").respond(201, json=target())
    run = csjd(
        "targets",
        "--url",
        "http://other.test:9000",
        "put",
        "billing",
        "--url",
        "https://billing.example.com/hook",
    )
    assert run.code == 0, run.err
    assert json.loads(other.calls.last.request.content) == {
        "url": "https://billing.example.com/hook"
    }


def test_delete_removes_the_target(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.delete("/targets/billing").respond(204)
    run = csjd("targets", "delete", "billing")
    assert run.code == 0 and route.called
    assert run.out.strip() == "deleted target billing"
    assert csjd("targets", "delete", "billing", "--json").json() == {"deleted": "billing"}


def test_delete_with_unfinished_jobs_is_refused(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.delete("/targets/billing").respond(
        409, json=problem(409, "Conflict", "target 'billing' still has 3 unfinished jobs")
    )
    run = csjd("targets", "delete", "billing")
    assert run.code == 1
    assert run.err == "csjd: Conflict: target 'billing' still has 3 unfinished jobs\n"


def test_a_name_that_is_not_one_path_segment_is_quoted(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    route = mock_api.get("/targets/a%2Fb").respond(404, json=problem(404, "Not found", "no"))
    assert csjd("targets", "show", "a/b").code == 1
    assert route.called
    dots = csjd("targets", "show", "..")
    assert dots.code == 2 and "not valid" in dots.err


def test_answers_are_sent_to_csjd_url(csjd: Csjd) -> None:
    with respx.mock(assert_all_mocked=True) as router:
        route = router.get("http://elsewhere.test/targets").respond(200, json=[])
        run = csjd("targets", "list", env={"CSJD_URL": "http://elsewhere.test/"})
    assert run.code == 0 and route.called
    assert "Authorization" not in route.calls.last.request.headers


def test_enable_sends_a_merge_patch(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.patch("/targets/billing").respond(200, json=target("billing"))
    run = csjd("targets", "enable", "billing")
    assert (run.code, run.out, run.err) == (0, "target billing enabled\n", "")
    request = route.calls.last.request
    assert route.call_count == 1
    assert request.headers["Content-Type"] == "application/merge-patch+json"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.content) == {"enabled": True}


def test_disable_sends_a_merge_patch(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    stored = target("billing", enabled=False, disabled_reason="disabled by an operator")
    route = mock_api.patch("/targets/billing").respond(200, json=stored)
    run = csjd("targets", "disable", "billing")
    assert (run.code, run.out, run.err) == (0, "target billing disabled\n", "")
    request = route.calls.last.request
    assert request.headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(request.content) == {"enabled": False}
    assert csjd("targets", "disable", "billing", "--json").json() == stored


def test_enable_an_unknown_target_prints_the_problem(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    route = mock_api.patch("/targets/nope").respond(
        404,
        json=problem(404, "Not found", "no target named 'nope'"),
        headers={"Content-Type": "application/problem+json"},
    )
    run = csjd("targets", "enable", "nope")
    assert route.called
    assert (run.code, run.out, run.err) == (1, "", "csjd: Not found: no target named 'nope'\n")


def test_disable_on_a_gateway_without_patch_says_it_is_older(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    """What a gateway from before ``PATCH /targets/{name}`` answers (app/api/problems.py)."""
    mock_api.patch("/targets/billing").respond(
        405,
        json=problem(405, "Method not allowed", "PATCH is not allowed on /targets/billing"),
        headers={"Allow": "GET, PUT, DELETE"},
    )
    run = csjd("targets", "disable", "billing")
    assert run.code == 1 and run.out == ""
    assert run.err.splitlines() == [
        "csjd: Method not allowed: PATCH is not allowed on /targets/billing",
        "hint: this gateway is older than this csjd and does not offer this command",
    ]


def test_enable_quotes_the_name_and_needs_one(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.patch("/targets/a%2Fb").respond(200, json=target("a/b"))
    assert csjd("targets", "enable", "a/b").out == "target a/b enabled\n"
    assert route.called
    missing = csjd("targets", "enable")
    assert missing.code == 2 and "the following arguments are required: name" in missing.err
