"""Errors everywhere are problems; health, metrics and the OpenAPI document."""

from __future__ import annotations

import shutil
from pathlib import Path

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
        "lifecycle": "ok",
    }
    api.gateway.draining = True
    draining = await api.client.get("/readyz")
    assert draining.status_code == 503
    assert "retry-after" in draining.headers
    assert draining.json()["checks"]["lifecycle"] == "draining"
    api.gateway.draining = False


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
