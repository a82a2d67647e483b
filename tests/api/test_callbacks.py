"""Completion callbacks over the API: named on POST /jobs, shown on the job, refused
with a clear problem (nothing stored) when the target is not one."""

from __future__ import annotations

from typing import Any

import orjson

from app.testing import FakeSender, Reply
from tests.conftest import Api

PROBLEM = "application/problem+json"


def body(**fields: Any) -> dict[str, Any]:
    return {"target": "billing", "payload": {"order": 7}, **fields}


async def test_the_ending_is_delivered_to_the_callback_target(api: Api, sender: FakeSender) -> None:
    await api.put_target()
    await api.put_target("hooks", url="http://127.0.0.1:9/callbacks")
    sender.script("http://127.0.0.1:9/hook", [Reply(status=400)])
    posted = await api.post_job("k", body(callback_target="hooks"))
    assert posted.status_code == 202
    assert posted.json()["callback_target"] == "hooks"
    job = await api.wait_for_job(posted.json()["id"], lambda j: j["callback_job_id"] is not None)
    assert job["state"] == "failed"
    callback = await api.wait_for_job(job["callback_job_id"], lambda j: j["state"] == "succeeded")
    assert callback["idempotency_key"] == f"callback:{job['id']}:1"
    assert callback["callback_target"] is None
    [sent] = [r for r in sender.requests if r.url.endswith("/callbacks")]
    delivered = orjson.loads(sent.body)
    assert delivered["type"] == "job.failed"
    assert delivered["job"]["id"] == job["id"]
    assert delivered["job"]["payload"] == {"order": 7}
    assert delivered["job"]["last_status_code"] == 400


async def test_an_unknown_callback_target_is_a_422_and_nothing_is_stored(api: Api) -> None:
    await api.put_target()
    response = await api.post_job("k", body(callback_target="nowhere"))
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert "callback_target" in response.json()["detail"]
    assert (await api.client.get("/jobs")).json()["items"] == []


async def test_a_callback_target_that_is_no_name_is_a_422(api: Api) -> None:
    await api.put_target()
    for bad in ("Not A Name", "", 5):
        response = await api.post_job("k", body(callback_target=bad))
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == PROBLEM
        assert "callback_target" in response.text
    assert (await api.client.get("/jobs")).json()["items"] == []


async def test_a_target_unfinished_jobs_would_call_back_is_not_deleted(api: Api) -> None:
    await api.put_target(enabled=False)
    await api.put_target("hooks")
    await api.post_job("k", body(callback_target="hooks"))
    response = await api.client.delete("/targets/hooks")
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert "callback_target" in response.json()["detail"]
    assert (await api.client.get("/targets/hooks")).status_code == 200
