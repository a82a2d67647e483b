"""Ordering keys over the API: accepted, shown, listed, delivered in order, and
refused with a clear problem (nothing stored) when the key is not one."""

from __future__ import annotations

from typing import Any

import pytest

from app.testing import FakeSender, Reply
from tests.conftest import Api

PROBLEM = "application/problem+json"


def body(n: int, key: str | None = "order-1", **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"target": "billing", "payload": {"n": n}, **fields}
    if key is not None:
        out["ordering_key"] = key
    return out


async def test_a_keys_jobs_are_delivered_one_at_a_time_in_the_order_accepted(
    api: Api, sender: FakeSender
) -> None:
    # the first answer is a 503: its retries hold the key's line, and only that line
    sender.script("http://127.0.0.1:9/hook", [Reply(status=503)])
    await api.put_target(backoff_initial_s=0.3, backoff_max_s=0.3)
    ids = []
    for n in range(4):
        response = await api.post_job(f"o{n}", body(n))
        assert response.status_code == 202
        assert response.json()["ordering_key"] == "order-1"
        ids.append(response.json()["id"])
    waiting = (await api.client.get(f"/jobs/{ids[3]}")).json()
    assert (waiting["state"], waiting["held_by"]) == ("scheduled", "ordering")
    for job_id in ids:
        await api.wait_for_job(job_id, lambda j: j["state"] == "succeeded")
    sent = [req.body for req in sender.requests]
    assert sent == [b'{"n":0}', b'{"n":0}', b'{"n":1}', b'{"n":2}', b'{"n":3}']


async def test_a_key_lists_its_jobs(api: Api) -> None:
    await api.put_target(enabled=False)
    for n in range(3):
        await api.post_job(f"a{n}", body(n, "a"))
    await api.post_job("b0", body(0, "b"))
    await api.post_job("none", body(0, None))
    listed = (await api.client.get("/jobs", params={"ordering_key": "a"})).json()["items"]
    assert sorted(j["idempotency_key"] for j in listed) == ["a0", "a1", "a2"]
    counted = (await api.client.get("/jobs/count", params={"ordering_key": "a"})).json()
    assert counted["count"] == 3
    held = [j["held_by"] for j in sorted(listed, key=lambda j: j["idempotency_key"])]
    assert held == ["disabled", "ordering", "ordering"]


async def test_a_batchs_items_take_ordering_keys(api: Api, sender: FakeSender) -> None:
    await api.put_target()
    items = [{**body(n, "batch"), "idempotency_key": f"b{n}"} for n in range(3)]
    results = (await api.client.post("/jobs/batch", json={"jobs": items})).json()["results"]
    assert [r["job"]["ordering_key"] for r in results] == ["batch"] * 3
    for r in results:
        await api.wait_for_job(r["job"]["id"], lambda j: j["state"] == "succeeded")
    assert [req.body for req in sender.requests] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']


@pytest.mark.parametrize(
    "key",
    ["", "x" * 201, "has space", "tab\there", "new\nline", "nul\u0000", 7, ["a"]],
)
async def test_a_key_that_is_not_one_is_refused_and_nothing_is_stored(api: Api, key: Any) -> None:
    await api.put_target()
    response = await api.post_job("bad", body(1, key=None, ordering_key=key))
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert "ordering_key" in response.text
    assert (await api.client.get("/jobs")).json()["items"] == []


async def test_the_same_idempotency_key_with_another_ordering_key_is_a_different_request(
    api: Api,
) -> None:
    await api.put_target(enabled=False)
    assert (await api.post_job("k", body(1, "a"))).status_code == 202
    again = await api.post_job("k", body(1, "b"))
    assert again.status_code == 422
    assert again.headers["content-type"] == PROBLEM
    replay = await api.post_job("k", body(1, "a"))
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["ordering_key"] == "a"


async def test_a_key_of_200_visible_characters_is_one(api: Api) -> None:
    await api.put_target(enabled=False)
    key = "é" + "k" * 199
    response = await api.post_job("long", body(1, key))
    assert response.status_code == 202
    assert response.json()["ordering_key"] == key


async def test_a_query_key_that_is_not_one_is_refused(api: Api) -> None:
    response = await api.client.get("/jobs", params={"ordering_key": "x" * 201})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
