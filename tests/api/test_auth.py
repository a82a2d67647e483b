"""API keys: 401 and 403 as problems, roles per route, jobs and keys scoped per name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import ConfigError
from app.core.access import Keyring, KeyRole, parse_keys, parse_keys_document, token_digest
from app.main import create_app
from tests.conftest import Api, ApiFactory, make_settings

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef012"
OPS = "ops-token-0123456789abcdef0123"
KEYS = f"alice:{ALICE}:producer,bob:{BOB}:producer,ops:{OPS}:admin"
JOB = {"target": "billing", "payload": {"n": 1}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def secured(api_factory: ApiFactory) -> Api:
    api = await api_factory(api_keys=KEYS)
    created = await api.client.put(
        "/targets/billing", json={"url": "http://127.0.0.1:9/hook"}, headers=bearer(OPS)
    )
    assert created.status_code == 201, created.text
    return api


async def _post(api: Api, token: str, key: str = "k1", body: Any = JOB) -> httpx.Response:
    return await api.client.post(
        "/jobs", json=body, headers={**bearer(token), "Idempotency-Key": key}
    )


async def _jobs(api: Api, token: str) -> list[dict[str, Any]]:
    response = await api.client.get("/jobs", headers=bearer(token))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/jobs"),
        ("GET", "/jobs"),
        ("GET", "/jobs/0193"),
        ("GET", "/jobs/0193/attempts"),
        ("POST", "/jobs/0193/cancel"),
        ("POST", "/jobs/0193/retry"),
        ("GET", "/targets"),
        ("GET", "/targets/billing"),
        ("PUT", "/targets/billing"),
        ("DELETE", "/targets/billing"),
        ("GET", "/no-such-route"),
    ],
)
@pytest.mark.parametrize(
    ("headers", "invalid_token"),
    [
        ({}, False),
        (bearer("not-a-key"), True),
        ({"Authorization": f"Basic {ALICE}"}, False),
        ({"Authorization": "Bearer "}, False),
    ],
)
async def test_without_a_known_key_every_route_is_401(
    secured: Api, method: str, path: str, headers: dict[str, str], invalid_token: bool
) -> None:
    response = await secured.client.request(
        method, path, headers={**headers, "Idempotency-Key": "k"}, json=JOB
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 401
    assert problem["type"].endswith("/unauthenticated")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    assert ('error="invalid_token"' in challenge) is invalid_token
    # the gateway stored nothing and changed nothing
    assert await _jobs(secured, OPS) == []
    assert (await secured.client.get("/targets/billing", headers=bearer(OPS))).status_code == 200


async def test_open_routes_need_no_key(secured: Api) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        response = await secured.client.get(path)
        assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/targets", None),
        ("GET", "/targets/billing", None),
        ("PUT", "/targets/billing", {"url": "http://127.0.0.1:9/elsewhere"}),
        ("DELETE", "/targets/billing", None),
    ],
)
async def test_a_producer_may_not_manage_targets(
    secured: Api, method: str, path: str, body: Any
) -> None:
    response = await secured.client.request(method, path, json=body, headers=bearer(ALICE))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert "alice" in response.json()["detail"]
    target = (await secured.client.get("/targets/billing", headers=bearer(OPS))).json()
    assert target["url"] == "http://127.0.0.1:9/hook"


async def test_a_producers_jobs_are_its_own(secured: Api) -> None:
    posted = await _post(secured, ALICE)
    assert posted.status_code == 202, posted.text
    assert posted.json()["caller"] == "alice"
    job_id = posted.json()["id"]
    assert (await secured.client.get(f"/jobs/{job_id}", headers=bearer(ALICE))).status_code == 200
    for method, path in (
        ("GET", f"/jobs/{job_id}"),
        ("GET", f"/jobs/{job_id}/attempts"),
        ("POST", f"/jobs/{job_id}/cancel"),
        ("POST", f"/jobs/{job_id}/retry"),
    ):
        response = await secured.client.request(method, path, headers=bearer(BOB))
        assert response.status_code == 404, (path, response.text)
    assert await _jobs(secured, BOB) == []
    counted = await secured.client.get("/jobs/count", headers=bearer(BOB))
    assert counted.json() == {"count": 0}
    assert [job["id"] for job in await _jobs(secured, ALICE)] == [job_id]
    job = (await secured.client.get(f"/jobs/{job_id}", headers=bearer(ALICE))).json()
    assert job["state"] != "cancelled"


async def test_a_producer_may_not_ask_for_another_callers_jobs(secured: Api) -> None:
    await _post(secured, ALICE)
    await _post(secured, BOB)
    for path in ("/jobs", "/jobs/count"):
        refused = await secured.client.get(path, params={"caller": "bob"}, headers=bearer(ALICE))
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("/forbidden")
        assert "alice" in refused.json()["detail"]
    own = await secured.client.get("/jobs", params={"caller": "alice"}, headers=bearer(ALICE))
    assert [job["caller"] for job in own.json()["items"]] == ["alice"]


async def test_an_admin_sees_and_handles_every_callers_jobs(secured: Api) -> None:
    parked = {"url": "http://127.0.0.1:9/hook", "enabled": False}  # the jobs stay queued
    await secured.client.put("/targets/billing", json=parked, headers=bearer(OPS))
    alice = (await _post(secured, ALICE)).json()
    bob = (await _post(secured, BOB)).json()
    mine = (await _post(secured, OPS)).json()
    assert mine["caller"] == "ops"

    everyone = await _jobs(secured, OPS)
    assert [(j["id"], j["caller"]) for j in everyone] == [
        (mine["id"], "ops"),
        (bob["id"], "bob"),
        (alice["id"], "alice"),
    ]
    for caller, expected in (("alice", [alice["id"]]), ("carol", [])):
        listed = await secured.client.get("/jobs", params={"caller": caller}, headers=bearer(OPS))
        assert [j["id"] for j in listed.json()["items"]] == expected
        counted = await secured.client.get(
            "/jobs/count", params={"caller": caller}, headers=bearer(OPS)
        )
        assert counted.json() == {"count": len(expected)}
    counted = await secured.client.get("/jobs/count", headers=bearer(OPS))
    assert counted.json() == {"count": 3}

    shown = await secured.client.get(f"/jobs/{alice['id']}", headers=bearer(OPS))
    assert shown.status_code == 200 and shown.json()["caller"] == "alice"
    assert shown.json()["payload"] == JOB["payload"]
    tried = await secured.client.get(f"/jobs/{alice['id']}/attempts", headers=bearer(OPS))
    assert tried.status_code == 200
    cancelled = await secured.client.post(f"/jobs/{alice['id']}/cancel", headers=bearer(OPS))
    assert cancelled.status_code == 200
    assert (cancelled.json()["state"], cancelled.json()["caller"]) == ("cancelled", "alice")
    retried = await secured.client.post(f"/jobs/{alice['id']}/retry", headers=bearer(OPS))
    assert retried.status_code == 202
    assert retried.json()["caller"] == "alice"
    # still alice's: she sees it, bob does not
    assert [j["id"] for j in await _jobs(secured, ALICE)] == [alice["id"]]
    assert alice["id"] not in {j["id"] for j in await _jobs(secured, BOB)}


async def test_idempotency_keys_are_scoped_per_name(secured: Api) -> None:
    alice = await _post(secured, ALICE, key="same")
    replay = await _post(secured, ALICE, key="same")
    bob = await _post(secured, BOB, key="same", body={**JOB, "payload": {"other": True}})
    assert alice.status_code == replay.status_code == bob.status_code == 202
    assert replay.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in bob.headers
    assert bob.json()["id"] != alice.json()["id"] == replay.json()["id"]


async def test_an_admins_own_jobs_are_under_its_own_name(secured: Api) -> None:
    posted = await _post(secured, OPS)
    assert posted.status_code == 202
    mine = await secured.client.get("/jobs", params={"caller": "ops"}, headers=bearer(OPS))
    assert [job["id"] for job in mine.json()["items"]] == [posted.json()["id"]]
    assert await _jobs(secured, ALICE) == []
    # keys are the admin's own too: the same key is a new job for another name
    again = await _post(secured, ALICE)
    assert again.json()["id"] != posted.json()["id"]


async def test_the_intake_lane_and_the_route_check_keys_alike(secured: Api) -> None:
    """The declared route (used by in-process clients of the FastAPI app) behaves as the lane."""
    lane, secured.app.intake = secured.app.intake, None  # POST /jobs now goes through FastAPI
    try:
        assert (await _post(secured, "wrong")).status_code == 401
        posted = await _post(secured, BOB, key="via-route")
        assert posted.status_code == 202
        assert [job["id"] for job in await _jobs(secured, BOB)] == [posted.json()["id"]]
    finally:
        secured.app.intake = lane


async def test_rotating_a_token_keeps_the_name(api_factory: ApiFactory, tmp_path: Path) -> None:
    new = "alice-new-token-0123456789abcdef"
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(
        f"- name: alice\n  role: producer\n  token_sha256: {token_digest(new).hex()}\n"
    )
    api = await api_factory(api_keys=KEYS, api_keys_file=keys_file)
    await api.client.put(
        "/targets/billing", json={"url": "http://127.0.0.1:9/h"}, headers=bearer(OPS)
    )
    old_job = (await _post(api, ALICE, key="k")).json()
    replay = await _post(api, new, key="k")
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == old_job["id"]


async def test_auth_off_serves_everyone_as_one_caller(api: Api) -> None:
    await api.put_target()
    posted = await api.post_job(key="open")
    assert posted.status_code == 202
    # an Authorization header means nothing without keys configured
    again = await api.client.post(
        "/jobs", json=JOB, headers={**bearer("anything"), "Idempotency-Key": "open"}
    )
    assert again.headers["idempotent-replayed"] == "true"


def test_the_schema_declares_the_bearer_scheme(secured: Api) -> None:
    schema = secured.app.openapi()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    put_target = schema["paths"]["/targets/{name}"]["put"]
    assert put_target["security"] == [{"bearer": []}]
    assert {"401", "403"} <= set(put_target["responses"])
    assert "403" not in schema["paths"]["/jobs"]["post"]["responses"]
    assert "security" not in schema["paths"]["/healthz"]["get"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("alice", "name:token:role"),
        ("alice:token", "name:token:role"),
        ("alice::producer", "name:token:role"),
        ("alice:tok en:producer", "visible ASCII"),
        ("al ice:token:producer", "not a valid key name"),
        ("alice:token:root", "'producer' or 'admin'"),
        ("alice:t1:producer,alice:t2:admin", "two roles"),
        ("alice:t1:producer,bob:t1:producer", "share one token"),
    ],
)
def test_unusable_keys_stop_the_gateway_before_it_starts(
    db_url: str, spec: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app(make_settings(db_url, api_keys=spec))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"name": "a"}, "expected a list"),
        ([{"name": "a", "role": "producer"}], "exactly name, role and token_sha256"),
        ([{"name": "a", "role": "producer", "token_sha256": "abc"}], "64 hexadecimal"),
        (
            [{"name": "a", "role": "producer", "token_sha256": "0" * 64, "token": "x"}],
            "exactly name",
        ),
    ],
)
def test_unusable_keys_files_are_refused(document: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_keys_document(document, "keys.yaml")


@pytest.mark.parametrize("spec", ["", " ", ",", " , "])
def test_keys_set_but_empty_stop_the_gateway(db_url: str, spec: str) -> None:
    with pytest.raises(ConfigError, match="holds no key"):
        create_app(make_settings(db_url, api_keys=spec))


@pytest.mark.parametrize("content", ["", "[]\n", "# no keys yet\n"])
def test_a_keys_file_without_keys_stops_the_gateway(
    db_url: str, tmp_path: Path, content: str
) -> None:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(content)
    with pytest.raises(ConfigError, match="holds no key"):
        create_app(make_settings(db_url, api_keys_file=keys_file))


def test_a_missing_keys_file_is_refused(db_url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        create_app(make_settings(db_url, api_keys_file=tmp_path / "absent.yaml"))


def test_the_keyring_finds_the_key_of_a_token() -> None:
    keyring = Keyring(parse_keys("a:token-a:producer, b:token:with:colons:admin"))
    found = keyring.identify("token:with:colons")
    assert found is not None
    assert (found.name, found.role) == ("b", KeyRole.ADMIN)
    assert keyring.identify("token-b") is None
    assert keyring.identify("") is None
    assert keyring.weak == ["a", "b"]
    assert not Keyring().enabled
