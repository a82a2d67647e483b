"""POST /jobs/batch: each item answered as POST /jobs would answer it, over the real app
and SQLite; whole-request problems; one commit, counted like single jobs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Api, ApiFactory

PROBLEM = "application/problem+json"
TOKEN = "s3cr3t-alice-token-0123456789"
ADMIN = "s3cr3t-admin-token-0123456789"


def item(key: str | None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"target": "billing", "payload": {"n": key}, **fields}
    if key is not None:
        body["idempotency_key"] = key
    return body


async def batch(api: Api, items: list[Any], **headers: str) -> httpx.Response:
    return await api.client.post("/jobs/batch", json={"jobs": items}, headers=headers)


def without_instance(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k != "instance"}


async def stored_keys(api: Api) -> set[str]:
    return {j["idempotency_key"] for j in (await api.client.get("/jobs")).json()["items"]}


async def test_a_batch_answers_each_job_in_order_and_delivers_them(api: Api) -> None:
    await api.put_target()
    # the Idempotency-Key header means nothing here: each item names its own key
    response = await batch(
        api, [item("a"), item("b", delay_s=0), item("c")], **{"Idempotency-Key": "a"}
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["status"], r["replayed"]) for r in results] == [(202, False)] * 3
    assert [r["job"]["idempotency_key"] for r in results] == ["a", "b", "c"]
    assert len({r["job"]["id"] for r in results}) == 3
    for r in results:
        job = await api.wait_for_job(r["job"]["id"], lambda j: j["state"] == "succeeded")
        assert job["payload"] == {"n": r["job"]["idempotency_key"]}
    # each is the job a single POST /jobs makes: the same answer for the same key
    single = await api.post_job("a", {"target": "billing", "payload": {"n": "a"}})
    assert single.headers["idempotent-replayed"] == "true"
    assert single.json()["id"] == results[0]["job"]["id"]


async def test_a_batch_is_counted_per_target_like_single_jobs(api: Api) -> None:
    await api.put_target(enabled=False)  # keeps them queued
    await api.put_target("search", enabled=False)
    await api.post_job("single")
    items = [item(f"b{i}") for i in range(5)] + [{**item("s1"), "target": "search"}]
    assert (await batch(api, items)).status_code == 200
    store = api.gateway.store
    assert await store.backlog_by_target() == {"billing": {"queued": 6}, "search": {"queued": 1}}
    accepted = {a.target: a.accepted for a in await store.activity(0, 2**40)}
    assert accepted == {"billing": 6, "search": 1}


async def test_refused_items_get_the_problem_a_single_post_gets_and_the_rest_are_stored(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(max_body_bytes=2048)
    await api.put_target()
    await api.post_job("taken", {"target": "billing", "payload": {"n": 1}})
    items: list[Any] = [
        item("ok-1"),
        item("unknown", target="nope"),
        item("invalid", max_attempts=0),
        item("reused"),  # stands for "taken" with another body, below
        item("past", expires_at="2001-01-01T00:00:00Z"),
        item("big", payload="x" * 4096),
        item("ok-2"),
    ]
    items[3]["idempotency_key"] = "taken"
    response = await batch(api, items)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202, 422, 422, 422, 422, 413, 202]
    for sent, result in zip(items, results, strict=True):
        if result["status"] == 202:
            continue
        key = sent["idempotency_key"]
        body = {k: v for k, v in sent.items() if k != "idempotency_key"}
        single = await api.post_job(key, body)
        assert single.status_code == result["status"]
        assert result["problem"]["instance"] == "/jobs/batch"
        assert without_instance(result["problem"]) == without_instance(single.json())
    assert results[3]["problem"]["type"].endswith("/idempotency-key-reused")
    assert await stored_keys(api) == {"taken", "ok-1", "ok-2"}


async def test_an_item_without_a_good_key_is_400_alone(api: Api) -> None:
    await api.put_target()
    items = [item(None), {**item("x"), "idempotency_key": 7}, item("a b"), "not a job", item("ok")]
    results = (await batch(api, items)).json()["results"]
    assert [r["status"] for r in results] == [400, 400, 400, 400, 202]
    assert all(r["problem"]["type"].endswith("/invalid-idempotency-key") for r in results[:4])
    assert "required" in results[0]["problem"]["detail"]
    assert await stored_keys(api) == {"ok"}


async def test_an_item_that_is_no_job_is_422_alone(api: Api) -> None:
    await api.put_target()
    items = [{"idempotency_key": "k", "payload": 1}, {**item("e"), "extra": 1}, item("ok")]
    results = (await batch(api, items)).json()["results"]
    assert [r["status"] for r in results] == [422, 422, 202]
    assert results[0]["problem"]["errors"][0]["loc"] == ["body", "target"]
    assert results[1]["problem"]["errors"][0]["loc"] == ["body", "extra"]


async def test_each_item_replays_on_its_own(api: Api) -> None:
    await api.put_target()
    first = (await batch(api, [item("a"), item("b")])).json()["results"]
    again = (await batch(api, [item("b"), item("c"), item("a"), item("c")])).json()["results"]
    assert [(r["status"], r["replayed"]) for r in again] == [
        (202, True),
        (202, False),
        (202, True),
        (202, True),  # the same key twice in one batch: one job
    ]
    assert again[0]["job"]["id"] == first[1]["job"]["id"]
    assert again[2]["job"]["id"] == first[0]["job"]["id"]
    assert again[3]["job"]["id"] == again[1]["job"]["id"]
    assert await stored_keys(api) == {"a", "b", "c"}


async def test_items_over_the_backlog_get_429_each(api_factory: ApiFactory) -> None:
    api = await api_factory(max_backlog=2)
    await api.put_target(enabled=False)
    results = (await batch(api, [item("a"), item("b"), item("c"), item("a")])).json()["results"]
    assert [r["status"] for r in results] == [202, 202, 429, 202]
    assert results[2]["problem"]["type"].endswith("/backlog-full")
    assert results[3]["replayed"] is True
    assert await stored_keys(api) == {"a", "b"}


@pytest.mark.parametrize(
    ("content", "status", "where"),
    [
        (b'{"jobs": [', 400, None),
        (b"", 400, None),
        (b'{"jobs": []}', 422, ["body", "jobs"]),
        (b"{}", 422, ["body", "jobs"]),
        (b'{"jobs": {}}', 422, ["body", "jobs"]),
        (b'[{"target": "billing"}]', 422, ["body"]),
        (b'{"jobs": [], "more": 1}', 422, ["body", "jobs"]),
    ],
)
async def test_a_request_wrong_as_a_whole_is_one_problem(
    api: Api, content: bytes, status: int, where: list[str] | None
) -> None:
    await api.put_target()
    response = await api.client.post(
        "/jobs/batch", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    if where is not None:
        assert response.json()["errors"][0]["loc"] == where
    assert await stored_keys(api) == set()


async def test_more_than_1000_jobs_is_422_and_nothing_stored(api: Api) -> None:
    await api.put_target()
    response = await batch(api, [item(f"k{i}") for i in range(1001)])
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "jobs"]
    assert await stored_keys(api) == set()
    accepted = await batch(api, [item(f"k{i}") for i in range(1000)])
    assert [r["status"] for r in accepted.json()["results"]] == [202] * 1000
    assert (await api.client.get("/jobs/count")).json()["count"] == 1000


async def test_a_batch_over_its_byte_limit_is_413_not_the_single_job_limit(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(max_body_bytes=2048, max_batch_bytes=16_384)
    await api.put_target()
    # over the single job's limit as a whole, each item within it: accepted
    fits = [item(f"k{i}", payload="x" * 1500) for i in range(8)]
    assert [r["status"] for r in (await batch(api, fits)).json()["results"]] == [202] * 8
    over = await batch(api, [item(f"o{i}", payload="x" * 1500) for i in range(12)])
    assert over.status_code == 413
    assert over.headers["content-type"] == PROBLEM
    assert "16384 bytes" in over.json()["detail"]
    assert not any(k.startswith("o") for k in await stored_keys(api))


async def test_a_batch_not_sent_as_json_is_415(api: Api) -> None:
    response = await api.client.post(
        "/jobs/batch", content=b"<jobs/>", headers={"content-type": "text/xml"}
    )
    assert response.status_code == 415


async def test_while_draining_the_whole_batch_is_503_and_nothing_stored(api: Api) -> None:
    await api.put_target()
    api.gateway.draining = True
    response = await batch(api, [item("a"), item("b")])
    assert response.status_code == 503
    assert "retry-after" in response.headers
    assert response.headers["content-type"] == PROBLEM
    api.gateway.draining = False
    assert await stored_keys(api) == set()


async def test_a_producer_key_may_send_a_batch_as_its_own_caller(api_factory: ApiFactory) -> None:
    api = await api_factory(api_keys=f"alice:{TOKEN}:producer,ops:{ADMIN}:admin")
    put = await api.client.put(
        "/targets/billing",
        json={"url": "http://127.0.0.1:9/hook", "enabled": False},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert put.status_code == 201
    anonymous = await batch(api, [item("a")])
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == PROBLEM
    wrong = await batch(api, [item("a")], Authorization="Bearer nope-nope-nope-nope")
    assert wrong.status_code == 401
    response = await batch(api, [item("a")], Authorization=f"Bearer {TOKEN}")
    [result] = response.json()["results"]
    assert (result["status"], result["job"]["caller"]) == (202, "alice")
    # the same key of another caller is another job
    [other] = (await batch(api, [item("a")], Authorization=f"Bearer {ADMIN}")).json()["results"]
    assert (other["replayed"], other["job"]["caller"]) == (False, "ops")
