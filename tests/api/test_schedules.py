"""/schedules: put, read, delete, every refusal (nothing stored), admins only, a fire seen."""

from __future__ import annotations

from typing import Any

import pytest

from app.testing import FakeClock
from tests.api.test_auth import ALICE, KEYS, OPS, bearer
from tests.conftest import Api, ApiFactory

#: 2027-01-15T08:00:00Z
T0 = 1_800_000_000.0 - 1_800_000_000.0 % 3600
BODY: dict[str, Any] = {
    "cron": "*/5 * * * *",
    "timezone": "Europe/Paris",
    "target": "billing",
    "payload": {"report": "daily", "n": 1},
    "headers": {"x-kind": "report"},
}


@pytest.fixture
async def clock() -> FakeClock:
    return FakeClock(T0 - 90)  # 07:58:30


@pytest.fixture
async def api(api_factory: ApiFactory, clock: FakeClock) -> Api:
    a = await api_factory(clock=clock)
    await a.put_target("billing")
    return a


async def test_put_creates_then_replaces_and_get_reads_it_back(api: Api) -> None:
    created = await api.client.put("/schedules/nightly", json=BODY)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "name": "nightly",
        "cron": "*/5 * * * *",
        "timezone": "Europe/Paris",
        "target": "billing",
        "payload": {"report": "daily", "n": 1},
        "headers": {"x-kind": "report"},
        "enabled": True,
        "next_run_at": "2027-01-15T08:00:00.000Z",
        "last_run_at": None,
        "last_job_id": None,
        "last_error": None,
        "created_at": "2027-01-15T07:58:30.000Z",
        "updated_at": "2027-01-15T07:58:30.000Z",
    }
    replaced = await api.client.put(
        "/schedules/nightly", json={**BODY, "cron": "0 9 * * *", "payload": [1]}
    )
    assert replaced.status_code == 200
    # 09:00 in Paris is 08:00 UTC in January
    assert replaced.json()["next_run_at"] == "2027-01-15T08:00:00.000Z"
    assert replaced.json()["payload"] == [1]
    got = await api.client.get("/schedules/nightly")
    assert got.status_code == 200 and got.json() == replaced.json()
    listed = await api.client.get("/schedules")
    assert listed.json() == [replaced.json()]


async def test_the_time_zone_defaults_to_utc_and_headers_to_none(api: Api) -> None:
    body = {"cron": "0 9 * * *", "target": "billing", "payload": None}
    created = (await api.client.put("/schedules/plain", json=body)).json()
    assert (created["timezone"], created["headers"]) == ("UTC", {})
    assert created["next_run_at"] == "2027-01-15T09:00:00.000Z"


async def test_a_disabled_schedule_has_no_next_run(api: Api) -> None:
    body = (await api.client.put("/schedules/off", json={**BODY, "enabled": False})).json()
    assert (body["enabled"], body["next_run_at"]) == (False, None)


async def test_delete_removes_it_then_it_is_not_found(api: Api) -> None:
    await api.client.put("/schedules/nightly", json=BODY)
    deleted = await api.client.delete("/schedules/nightly")
    assert deleted.status_code == 204 and deleted.content == b""
    for response in (
        await api.client.get("/schedules/nightly"),
        await api.client.delete("/schedules/nightly"),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == "no schedule named 'nightly'"
    assert (await api.client.get("/schedules")).json() == []


@pytest.mark.parametrize(
    ("change", "where", "says"),
    [
        ({"cron": "61 * * * *"}, "cron", "bad minute"),
        ({"cron": "* * *"}, "cron", "has 5 fields"),
        ({"cron": "0 0 30 2 *"}, "cron", "bad day-of-month"),
        ({"cron": "@often"}, "cron", "unknown nickname"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone 'Mars/Olympus'"),
        ({"timezone": "Europe"}, "timezone", "unknown time zone"),
        ({"target": "Not A Name"}, "target", "pattern"),
        ({"payload": float("inf")}, "payload", None),
        ({"headers": {"webhook-id": "x"}}, "headers", "webhook-id"),
        ({"enabled": "sometimes"}, "enabled", "boolean"),
        ({"every": "day"}, "every", "Extra inputs"),
    ],
)
async def test_an_invalid_body_is_422_and_stores_nothing(
    api: Api, change: dict[str, Any], where: str, says: str | None
) -> None:
    body = {**BODY, **change}
    if change == {"payload": float("inf")}:
        response = await api.client.put(
            "/schedules/nightly",
            content=b'{"cron": "* * * * *", "target": "billing", "payload": 1e999}',
            headers={"content-type": "application/json"},
        )
    else:
        response = await api.client.put("/schedules/nightly", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["detail"].startswith(f"{where}: ")
    if says is not None:
        assert says in problem["detail"]
    assert [e["loc"] for e in problem["errors"]] == [["body", where]]
    assert (await api.client.get("/schedules")).json() == []


async def test_a_missing_field_is_422(api: Api) -> None:
    response = await api.client.put("/schedules/nightly", json={"cron": "* * * * *"})
    assert response.status_code == 422
    assert {tuple(e["loc"]) for e in response.json()["errors"]} == {
        ("body", "target"),
        ("body", "payload"),
    }
    assert (await api.client.get("/schedules")).json() == []


async def test_an_unknown_target_is_422_and_stores_nothing(api: Api) -> None:
    response = await api.client.put("/schedules/nightly", json={**BODY, "target": "nowhere"})
    assert response.status_code == 422
    assert response.json()["type"].endswith("/unknown-target")
    assert response.json()["detail"].startswith("no target named 'nowhere'")
    assert (await api.client.get("/schedules")).json() == []


async def test_an_invalid_name_is_422(api: Api) -> None:
    response = await api.client.put("/schedules/Not_Ok", json=BODY)
    assert response.status_code == 422
    assert (await api.client.get("/schedules")).json() == []


async def test_malformed_json_is_400(api: Api) -> None:
    response = await api.client.put(
        "/schedules/nightly", content=b"{", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert (await api.client.get("/schedules")).json() == []


async def test_a_fire_shows_on_the_schedule_and_makes_a_job_of_its_own_caller(
    api: Api, clock: FakeClock
) -> None:
    await api.client.put("/schedules/nightly", json=BODY)
    clock.t = T0 + 0.5
    await api.gateway.scheduler.tick()
    schedule = (await api.client.get("/schedules/nightly")).json()
    assert schedule["last_run_at"] == "2027-01-15T08:00:00.000Z"
    assert schedule["next_run_at"] == "2027-01-15T08:05:00.000Z"
    assert schedule["last_error"] is None
    job = (await api.client.get(f"/jobs/{schedule['last_job_id']}")).json()
    assert job["idempotency_key"] == "schedule:nightly:2027-01-15T08:00:00Z"
    assert job["caller"] == "schedule:nightly"
    assert (job["target"], job["payload"], job["headers"]) == (
        "billing",
        {"report": "daily", "n": 1},
        {"x-kind": "report"},
    )
    listed = await api.client.get("/jobs", params={"caller": "schedule:nightly"})
    assert [j["id"] for j in listed.json()["items"]] == [job["id"]]


async def test_a_fire_for_a_disabled_target_shows_why_it_made_no_job(
    api: Api, clock: FakeClock
) -> None:
    await api.client.put("/schedules/nightly", json=BODY)
    await api.put_target("billing", enabled=False)
    clock.t = T0 + 0.5
    await api.gateway.scheduler.tick()
    schedule = (await api.client.get("/schedules/nightly")).json()
    assert schedule["last_job_id"] is None
    assert schedule["last_error"] == "skipped: the target 'billing' is disabled"
    assert schedule["next_run_at"] == "2027-01-15T08:05:00.000Z"


class TestAdminsOnly:
    @pytest.fixture
    async def secured(self, api_factory: ApiFactory, clock: FakeClock) -> Api:
        api = await api_factory(api_keys=KEYS, clock=clock)
        created = await api.client.put(
            "/targets/billing", json={"url": "http://127.0.0.1:9/hook"}, headers=bearer(OPS)
        )
        assert created.status_code == 201
        return api

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("PUT", "/schedules/nightly", BODY),
            ("GET", "/schedules", None),
            ("GET", "/schedules/nightly", None),
            ("DELETE", "/schedules/nightly", None),
        ],
    )
    async def test_a_producer_may_not_touch_schedules(
        self, secured: Api, method: str, path: str, body: Any
    ) -> None:
        response = await secured.client.request(method, path, json=body, headers=bearer(ALICE))
        assert response.status_code == 403
        assert "alice" in response.json()["detail"]
        without = await secured.client.request(method, path, json=body)
        assert without.status_code == 401
        listed = await secured.client.get("/schedules", headers=bearer(OPS))
        assert listed.json() == []

    async def test_an_admin_may(self, secured: Api) -> None:
        put = await secured.client.put("/schedules/nightly", json=BODY, headers=bearer(OPS))
        assert put.status_code == 201
        got = await secured.client.get("/schedules/nightly", headers=bearer(OPS))
        assert got.json()["name"] == "nightly"
