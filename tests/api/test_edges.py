"""Errors everywhere are problems; health, metrics and the OpenAPI document."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from app.openapi import render
from tests.conftest import Api, ApiFactory

ROOT = Path(__file__).resolve().parents[2]


async def test_unknown_routes_and_methods_are_problems(api: Api) -> None:
    missing = await api.client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["status"] == 404 and missing.json()["detail"]
    wrong = await api.client.delete("/jobs")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"] == "application/problem+json"
    assert wrong.json()["title"] == "Method not allowed"


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.client.get("/healthz")).json()["status"] == "ok"
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "database": "ok",
        "dispatcher": "ok",
        "heartbeat": "ok",
        "maintenance": "ok",
        "schedules": "ok",
        "lifecycle": "ok",
    }
    api.gateway.draining = True
    draining = await api.client.get("/readyz")
    assert draining.status_code == 503
    assert "retry-after" in draining.headers
    assert draining.json()["checks"]["lifecycle"] == "draining"
    api.gateway.draining = False


async def test_readiness_says_the_database_is_unreachable_and_only_the_log_says_why(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class DriverError(OSError):
        pass

    async def ping() -> None:
        raise DriverError("connect to db.internal:5432 as csjd_owner failed")

    monkeypatch.setattr(api.gateway.store, "ping", ping)
    ready = await api.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    assert ready.json()["checks"]["database"] == "unreachable"
    for leak in ("DriverError", "OSError", "db.internal", "5432", "csjd_owner"):
        assert leak not in ready.text
    [logged] = [r for r in caplog.records if r.getMessage() == "readiness_database_unreachable"]
    assert logged.exc_info is not None and "db.internal" in str(logged.exc_info[1])


async def test_metrics_count_accepted_jobs_and_deliveries(api: Api) -> None:
    await api.put_target()
    job = (await api.post_job()).json()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
    await api.post_job()  # a replay is not a new job
    await api.gateway.store.recount()
    text = (await api.client.get("/metrics")).text
    assert 'csjd_jobs_accepted_total{target="billing"} 1.0' in text
    assert 'csjd_deliveries_total{outcome="success",target="billing"} 1.0' in text
    assert 'csjd_delivery_duration_seconds_count{target="billing"} 1.0' in text
    assert 'csjd_inflight{target="billing"} 0.0' in text
    assert "http_requests_total" in text


async def test_two_apps_in_one_process_keep_their_own_metrics(
    api_factory: ApiFactory, tmp_path: Path, migrated_template: Path
) -> None:
    other_db = tmp_path / "other.db"
    shutil.copy(migrated_template, other_db)
    first = await api_factory()
    second = await api_factory(database_url=f"sqlite+aiosqlite:///{other_db}")
    await first.put_target(enabled=False)
    await first.post_job()
    assert (
        'csjd_jobs_accepted_total{target="billing"} 1.0'
        in (await first.client.get("/metrics")).text
    )
    assert "csjd_jobs_accepted_total{" not in (await second.client.get("/metrics")).text


def test_openapi_yaml_matches_the_app() -> None:
    on_disk = (ROOT / "openapi.yaml").read_text()
    assert on_disk == render(), "openapi.yaml drifted from the app: run `make openapi`"


def test_openapi_documents_the_contract() -> None:
    doc = yaml.safe_load(render())
    paths = doc["paths"]
    assert set(paths) >= {
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/attempts",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/retry",
        "/targets",
        "/targets/{name}",
        "/healthz",
        "/readyz",
    }
    post = paths["/jobs"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in post["parameters"])
    assert {"202", "400", "409", "413", "422", "429", "503"} <= set(post["responses"])


async def test_the_schema_is_served(api: Api) -> None:
    served = (await api.client.get("/openapi.json")).json()
    assert served["paths"].keys() == yaml.safe_load(render())["paths"].keys()


def test_problems_are_documented_as_problem_json() -> None:
    # Clients (and schema checks) look up the body of an answer by the type it is
    # sent as; FastAPI's own 422 (HTTPValidationError, application/json) is never sent.
    doc = yaml.safe_load(render())
    problem_schema = {"$ref": "#/components/schemas/Problem"}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    content = response["content"]
                    assert content["application/problem+json"]["schema"] == problem_schema, (
                        method,
                        path,
                        status,
                    )
    assert "HTTPValidationError" not in doc["components"]["schemas"]


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"\x00", "application/json", 400),
        (b"{not json", "application/json", 400),
        (b"url=http://a", "text/plain", 415),
        (b"[" * 300_000, "application/json", 413),
    ],
)
async def test_what_put_target_answers_to_a_bad_body_is_documented(
    api: Api, content: bytes, content_type: str, status: int
) -> None:
    response = await api.client.put(
        "/targets/billing", content=content, headers={"content-type": content_type}
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    documented = yaml.safe_load(render())["paths"]["/targets/{name}"]["put"]["responses"]
    assert str(status) in documented
    assert (await api.client.get("/targets")).json() == []


async def test_what_post_jobs_answers_to_a_non_json_body_is_documented(api: Api) -> None:
    response = await api.client.post(
        "/jobs", content=b"x", headers={"Idempotency-Key": "k", "content-type": "text/plain"}
    )
    assert response.status_code == 415
    assert "415" in yaml.safe_load(render())["paths"]["/jobs"]["post"]["responses"]


@pytest.mark.parametrize("action", ["cancel", "retry"])
async def test_a_bodiless_request_is_not_judged_by_its_content_type(api: Api, action: str) -> None:
    await api.put_target()
    job = (await api.post_job(body={"target": "billing", "payload": 1, "delay_s": 60})).json()
    if action == "retry":
        await api.client.post(f"/jobs/{job['id']}/cancel")
    response = await api.client.post(
        f"/jobs/{job['id']}/{action}", headers={"content-type": "text/plain"}
    )
    assert response.status_code in (200, 202), response.text
    expected = "cancelled" if action == "cancel" else "queued"
    assert response.json()["state"] == expected
