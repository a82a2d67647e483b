"""``csjd schedules list|show|put|delete``: what is sent, and what the operator reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import respx

from tests.cli.conftest import TOKEN, Csjd, CsjdTty, problem

JOB_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


def schedule(name: str = "nightly-invoices", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "cron": "0 2 * * *",
        "timezone": "Europe/Paris",
        "target": "billing",
        "payload": {"run": "invoices"},
        "headers": {},
        "enabled": True,
        "next_run_at": "2026-01-02T01:00:00.000Z",
        "last_run_at": "2026-01-01T01:00:00.000Z",
        "last_job_id": JOB_ID,
        "last_error": None,
        "created_at": "2025-12-01T00:00:00.000Z",
        "updated_at": "2025-12-01T00:00:00.000Z",
        **fields,
    }


def _schedules() -> list[dict[str, Any]]:
    return [
        schedule(),
        schedule(
            "every-five-minutes-report",
            cron="*/5 * * * *",
            target="reports",
            last_job_id=None,
            last_error="skipped: the target 'reports' is disabled",
        ),
        schedule("paused", enabled=False, next_run_at=None, last_run_at=None, last_job_id=None),
    ]


def test_list_through_a_pipe_gives_every_column(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.get("/schedules").respond(200, json=_schedules())
    run = csjd("schedules", "list")
    assert run.code == 0, run.err
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert run.rows()[0] == [
        "name",
        "cron",
        "timezone",
        "target",
        "enabled",
        "next_run_at",
        "last_run_at",
        "last_job_id",
        "last_error",
    ]
    assert run.row("nightly-invoices") == [
        "nightly-invoices",
        "0 2 * * *",
        "Europe/Paris",
        "billing",
        "yes",
        "2026-01-02T01:00:00Z",
        "2026-01-01T01:00:00Z",
        JOB_ID,
        "",
    ]
    assert run.row("every-five")[6:] == [
        "2026-01-01T01:00:00Z skipped",
        "",
        "skipped: the target 'reports' is disabled",
    ]
    assert run.row("paused")[4:7] == ["no", "disabled", "never"]


def test_list_fits_80_columns_with_names_whole(
    mock_api: respx.MockRouter, csjd_tty: CsjdTty
) -> None:
    mock_api.get("/schedules").respond(200, json=_schedules())
    screen = csjd_tty("schedules", "list", columns=80)
    assert screen.code == 0
    assert all(len(line) <= 80 for line in screen.lines), "\n".join(screen.lines)
    header = re.split(r" {2,}", screen.line("name", "cron").strip())
    assert header == ["name", "cron", "target", "next_run_at"]  # no room for the last fire
    row = re.split(r" {2,}", screen.line("nightly-invoices").strip())
    assert row == ["nightly-invoices", "0 2 * * *", "billing", "2026-01-02T01:00:00Z"]
    assert (
        screen.line("every-five-minutes-report").lstrip().startswith("every-five-minutes-report ")
    )
    assert "disabled" in screen.line("paused")


def test_show_gives_the_schedule_and_its_fires(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.get("/schedules/nightly-invoices").respond(200, json=schedule())
    run = csjd("schedules", "show", "nightly-invoices")
    assert run.code == 0, run.err
    assert "0 2 * * *" in run.out and "Europe/Paris" in run.out
    assert JOB_ID in run.out and "2026-01-02T01:00:00Z" in run.out


def test_json_prints_the_apis_answer(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.get("/schedules").respond(200, json=_schedules())
    assert csjd("schedules", "list", "--json").json() == _schedules()


def test_put_sends_the_whole_schedule(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.put("/schedules/nightly-invoices").respond(201, json=schedule())
    run = csjd(
        "schedules",
        "put",
        "nightly-invoices",
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Paris",
        "--target",
        "billing",
        "--payload",
        '{"run": "invoices"}',
        "--header",
        "X-Run=nightly",
    )
    assert run.code == 0, run.err
    assert json.loads(route.calls.last.request.content) == {
        "cron": "0 2 * * *",
        "timezone": "Europe/Paris",
        "target": "billing",
        "payload": {"run": "invoices"},
        "headers": {"X-Run": "nightly"},
    }
    assert run.out.splitlines()[0] == "created schedule nightly-invoices"


def test_put_reads_a_file_and_the_flags_win(
    mock_api: respx.MockRouter, csjd: Csjd, tmp_path: Path
) -> None:
    route = mock_api.put("/schedules/nightly-invoices").respond(200, json=schedule())
    file = tmp_path / "schedule.yaml"
    file.write_text("cron: '0 3 * * *'\ntarget: billing\npayload: [1, 2]\n")
    run = csjd("schedules", "put", "nightly-invoices", "--file", str(file), "--cron", "0 2 * * *")
    assert run.code == 0, run.err
    assert json.loads(route.calls.last.request.content) == {
        "cron": "0 2 * * *",
        "target": "billing",
        "payload": [1, 2],
    }
    assert run.out.splitlines()[0] == "replaced schedule nightly-invoices"


def test_put_disabled_and_without_a_payload_sends_null(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    route = mock_api.put("/schedules/off").respond(201, json=schedule("off", enabled=False))
    run = csjd("schedules", "put", "off", "--cron", "@daily", "--target", "billing", "--disabled")
    assert run.code == 0, run.err
    body = json.loads(route.calls.last.request.content)
    assert (body["payload"], body["enabled"]) == (None, False)


def test_put_without_cron_or_target_is_a_usage_error(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    run = csjd("schedules", "put", "nightly", "--target", "billing")
    assert run.code == 2
    assert run.err.strip() == "csjd: give the schedule's --cron, or --file FILE"
    assert not mock_api.calls


def test_put_with_a_payload_that_is_not_json_is_refused(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    run = csjd("schedules", "put", "n", "--cron", "@daily", "--target", "b", "--payload", "hi")
    assert run.code == 2
    assert "not JSON" in run.err
    assert not mock_api.calls


def test_a_refused_cron_prints_the_gateways_reason(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    mock_api.put("/schedules/nightly").respond(
        422,
        json=problem(
            422,
            "Invalid request",
            "cron: Value error, '61 * * * *' is not a valid cron expression: bad minute",
            errors=[{"loc": ["body", "cron"], "msg": "bad minute", "type": "value_error"}],
        ),
        headers={"content-type": "application/problem+json"},
    )
    run = csjd("schedules", "put", "nightly", "--cron", "61 * * * *", "--target", "billing")
    assert run.code == 1
    assert run.err.splitlines()[0] == (
        "csjd: Invalid request: cron: Value error, '61 * * * *' is not a valid cron "
        "expression: bad minute"
    )


def test_delete_says_what_it_did(mock_api: respx.MockRouter, csjd: Csjd) -> None:
    route = mock_api.delete("/schedules/nightly").respond(204)
    run = csjd("schedules", "delete", "nightly")
    assert run.code == 0, run.err
    assert route.called
    assert run.out.strip() == "deleted schedule nightly"


def test_a_producer_key_is_told_it_needs_an_admin_key(
    mock_api: respx.MockRouter, csjd: Csjd
) -> None:
    mock_api.get("/schedules").respond(
        403,
        json=problem(403, "Forbidden", "the API key 'shop' has the role producer"),
        headers={"content-type": "application/problem+json"},
    )
    run = csjd("schedules", "list")
    assert run.code == 1
    assert "managing targets and schedules needs an admin key" in run.err
