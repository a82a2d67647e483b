"""Status, listing, attempts, cancel and retry over the real app."""

from __future__ import annotations

from app.core.outcome import FailureKind
from app.dispatch.sender import Failure
from app.testing import FakeSender, Reply
from tests.conftest import Api, ApiFactory

UNKNOWN = "00000000-0000-7000-8000-000000000000"


async def test_a_job_is_delivered_and_its_attempts_are_listed(api: Api, sender: FakeSender) -> None:
    await api.put_target()
    sender.script("http://127.0.0.1:9/hook", [Reply(status=500, body=b"boom"), Reply(status=200)])
    job = (await api.post_job("k", {"target": "billing", "payload": {"n": 1}})).json()
    # the first retry backs off up to 1 s (full jitter)
    done = await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
    assert done["attempts"] == 2 and done["last_status_code"] == 200
    assert done["completed_at"] is not None
    attempts = (await api.client.get(f"/jobs/{job['id']}/attempts")).json()
    assert [(a["n"], a["outcome"], a["status_code"]) for a in attempts] == [
        (1, "retryable", 500),
        (2, "success", 200),
    ]
    assert attempts[0]["response_excerpt"] == "boom"
    assert attempts[0]["error"] == "HTTP 500"
    assert attempts[0]["duration_ms"] >= 0


async def test_get_job_sends_an_etag_and_honours_if_none_match(api: Api) -> None:
    await api.put_target(enabled=False)
    job = (await api.post_job()).json()
    first = await api.client.get(f"/jobs/{job['id']}")
    etag = first.headers["etag"]
    again = await api.client.get(f"/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    await api.client.post(f"/jobs/{job['id']}/cancel")
    changed = await api.client.get(f"/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


async def test_unknown_jobs_are_404_problems(api: Api) -> None:
    for path in (f"/jobs/{UNKNOWN}", f"/jobs/{UNKNOWN}/attempts"):
        response = await api.client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
    for action in ("cancel", "retry"):
        assert (await api.client.post(f"/jobs/{UNKNOWN}/{action}")).status_code == 404


async def test_list_is_newest_first_filtered_and_paginated(api: Api) -> None:
    await api.put_target("a", enabled=False)
    await api.put_target("b", enabled=False)
    ids = []
    for i in range(5):
        target = "a" if i % 2 == 0 else "b"
        ids.append((await api.post_job(f"k{i}", {"target": target, "payload": i})).json()["id"])
    await api.client.post(f"/jobs/{ids[0]}/cancel")

    page = (await api.client.get("/jobs", params={"limit": 2})).json()
    assert [j["id"] for j in page["items"]] == [ids[4], ids[3]]
    page2 = (
        await api.client.get("/jobs", params={"limit": 2, "cursor": page["next_cursor"]})
    ).json()
    assert [j["id"] for j in page2["items"]] == [ids[2], ids[1]]
    page3 = (
        await api.client.get("/jobs", params={"limit": 2, "cursor": page2["next_cursor"]})
    ).json()
    assert [j["id"] for j in page3["items"]] == [ids[0]] and page3["next_cursor"] is None

    by_target = (await api.client.get("/jobs", params={"target": "a"})).json()["items"]
    assert [j["id"] for j in by_target] == [ids[4], ids[2], ids[0]]
    cancelled = (await api.client.get("/jobs", params={"state": "cancelled"})).json()["items"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    both = (await api.client.get("/jobs", params={"state": "queued", "target": "b"})).json()
    assert [j["id"] for j in both["items"]] == [ids[3], ids[1]]


async def test_bad_list_parameters_are_problems(api: Api) -> None:
    assert (await api.client.get("/jobs", params={"state": "lost"})).status_code == 422
    assert (await api.client.get("/jobs", params={"limit": 0})).status_code == 422
    assert (await api.client.get("/jobs", params={"limit": 501})).status_code == 422
    bad_cursor = await api.client.get("/jobs", params={"cursor": "not-a-cursor"})
    assert bad_cursor.status_code == 400
    assert bad_cursor.headers["content-type"] == "application/problem+json"


async def test_cancel_and_retry_follow_the_diagram(api: Api, sender: FakeSender) -> None:
    await api.put_target(enabled=False)
    job = (await api.post_job()).json()
    unfinished = await api.client.post(f"/jobs/{job['id']}/retry")
    assert unfinished.status_code == 409
    assert unfinished.json()["state"] == "queued"
    cancelled = await api.client.post(f"/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["completed_at"] is not None
    again = await api.client.post(f"/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"

    await api.put_target(enabled=True)
    retried = await api.client.post(f"/jobs/{job['id']}/retry")
    assert retried.status_code == 202
    assert (retried.json()["state"], retried.json()["attempts"]) in {("queued", 0), ("running", 0)}
    done = await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
    assert done["attempts"] == 1
    assert (await api.client.post(f"/jobs/{job['id']}/cancel")).status_code == 409


async def test_a_failed_job_can_be_retried_with_attempts_reset(
    api: Api, sender: FakeSender
) -> None:
    await api.put_target(max_attempts=1)
    sender.script("http://127.0.0.1:9/hook", [Reply(status=400)])
    job = (await api.post_job()).json()
    failed = await api.wait_for_job(job["id"], lambda j: j["state"] == "failed")
    assert failed["failure_reason"] == "permanent_status"
    assert failed["last_status_code"] == 400
    await api.client.post(f"/jobs/{job['id']}/retry")
    done = await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
    assert done["attempts"] == 1 and done["failure_reason"] is None
    history = (await api.client.get(f"/jobs/{job['id']}/attempts")).json()
    assert [a["outcome"] for a in history] == ["permanent", "success"]


async def test_a_transport_error_is_recorded_as_retryable(api_factory: ApiFactory) -> None:
    sender = FakeSender()
    sender.script(
        "http://127.0.0.1:9/hook", [Failure(kind=FailureKind.CONNECTION_REFUSED, message="refused")]
    )
    api = await api_factory(sender=sender)
    await api.put_target(max_attempts=1)
    job = (await api.post_job()).json()
    failed = await api.wait_for_job(job["id"], lambda j: j["state"] == "failed")
    assert failed["failure_reason"] == "attempts_exhausted"
    assert failed["last_error"] == "connection refused"
    assert failed["last_status_code"] is None


async def test_attempts_come_a_page_at_a_time_after_a_number(api: Api, sender: FakeSender) -> None:
    sender.default = Reply(status=503)
    await api.put_target(max_attempts=5, backoff_initial_s=0.001, backoff_max_s=0.001)
    job = (await api.post_job()).json()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "failed")
    path = f"/jobs/{job['id']}/attempts"

    async def numbers(query: str) -> list[int]:
        response = await api.client.get(f"{path}{query}")
        assert response.status_code == 200, response.text
        return [a["n"] for a in response.json()]

    assert await numbers("") == [1, 2, 3, 4, 5]
    assert await numbers("?limit=2") == [1, 2]
    assert await numbers("?after=2&limit=2") == [3, 4]
    assert await numbers("?after=4&limit=1000") == [5]
    assert await numbers("?after=5") == []
    assert (await api.client.get(f"/jobs/{UNKNOWN}/attempts?after=1")).status_code == 404


async def test_out_of_range_attempt_pages_are_problems(api: Api) -> None:
    await api.put_target(enabled=False)
    job = (await api.post_job()).json()
    for query in ("limit=0", "limit=1001", "after=-1", "after=2147483648", "limit=x"):
        response = await api.client.get(f"/jobs/{job['id']}/attempts?{query}")
        assert response.status_code == 422, query
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"], query
