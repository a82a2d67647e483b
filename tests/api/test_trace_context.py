"""Trace context with nothing exported: a producer's traceparent is kept with the job and
continued by every attempt under a new parent id, over the real app, SQLite and a fake
sender. What an invalid one does, which one wins, and that a replay is a replay."""

from __future__ import annotations

from typing import Any

from app.api.intake import new_job
from app.api.schemas import JobIn
from app.core import trace
from app.testing import FakeSender, Reply
from tests.conftest import Api

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
URL = "http://127.0.0.1:9/hook"


def sent(sender: FakeSender, count: int) -> list[dict[str, str]]:
    """The headers of every request sent, which must be ``count`` (the jobs are done)."""
    assert len(sender.requests) == count
    return [dict(r.headers) for r in sender.requests]


async def delivered(api: Api, sender: FakeSender, job_id: str, count: int) -> list[Any]:
    await api.wait_for_job(job_id, lambda j: j["state"] == "succeeded")
    return sent(sender, count)


async def test_each_attempt_continues_the_producer_s_trace_under_a_new_parent(
    api: Api, sender: FakeSender
) -> None:
    await api.put_target(backoff_initial_s=0.01, backoff_max_s=0.01)
    sender.script(URL, [Reply(status=503), Reply(status=503), Reply(status=200)])
    response = await api.post_job(traceparent=TRACEPARENT, tracestate="congo=t61rcWkgMzE")
    assert response.status_code == 202
    job_id = response.json()["id"]
    job = (await api.client.get(f"/jobs/{job_id}")).json()
    assert job["headers"] == {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"}

    attempts = await delivered(api, sender, job_id, 3)
    parents = []
    for headers in attempts:
        context = trace.parse(headers["traceparent"])
        assert context is not None
        assert (context.trace_id, context.flags) == (TRACE_ID, "01")
        parents.append(context.parent_id)
        assert headers["tracestate"] == "congo=t61rcWkgMzE"
    assert len(set(parents)) == 3
    assert PARENT_ID not in parents


async def test_an_invalid_traceparent_is_ignored_the_job_is_accepted_and_sends_none(
    api: Api, sender: FakeSender
) -> None:
    await api.put_target()
    response = await api.post_job(traceparent="00-not-a-trace-01", tracestate="congo=t61")
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert (await api.client.get(f"/jobs/{job_id}")).json()["headers"] == {}
    [headers] = await delivered(api, sender, job_id, 1)
    assert "traceparent" not in headers
    assert "tracestate" not in headers


async def test_a_job_without_a_traceparent_sends_none(api: Api, sender: FakeSender) -> None:
    await api.put_target()
    job_id = (await api.post_job()).json()["id"]
    [headers] = await delivered(api, sender, job_id, 1)
    assert not {"traceparent", "tracestate"} & set(headers)


async def test_the_body_s_traceparent_wins_and_an_invalid_one_there_is_dropped(
    api: Api, sender: FakeSender
) -> None:
    await api.put_target()
    own = f"00-{'1' * 32}-{'2' * 16}-00"
    body = {"target": "billing", "payload": {}, "headers": {"TraceParent": own, "X-A": "1"}}
    first = (await api.post_job("own", body, traceparent=TRACEPARENT)).json()
    body["headers"] = {"traceparent": "garbage", "X-A": "1"}
    second = (await api.post_job("fallback", body, traceparent=TRACEPARENT)).json()
    jobs = [(await api.client.get(f"/jobs/{j['id']}")).json() for j in (first, second)]
    assert [j["headers"] for j in jobs] == [
        {"X-A": "1", "traceparent": own},
        {"X-A": "1", "traceparent": TRACEPARENT},
    ]
    await api.wait_for_job(second["id"], lambda j: j["state"] == "succeeded")
    await api.wait_for_job(first["id"], lambda j: j["state"] == "succeeded")
    by_job = {h["webhook-id"]: h for h in sent(sender, 2)}
    assert by_job[first["id"]]["traceparent"].startswith(f"00-{'1' * 32}-")
    assert by_job[first["id"]]["traceparent"].endswith("-00")
    assert by_job[second["id"]]["traceparent"].startswith(f"00-{TRACE_ID}-")


async def test_a_request_sent_again_under_another_trace_is_a_replay(api: Api) -> None:
    await api.put_target(enabled=False)
    first = await api.post_job("k", traceparent=TRACEPARENT)
    other = f"00-{'3' * 32}-{'4' * 16}-01"
    again = await api.post_job("k", traceparent=other)
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    body = {"target": "billing", "payload": {"n": 1}, "headers": {"traceparent": other}}
    in_body = await api.post_job("k", body)
    assert in_body.headers["idempotent-replayed"] == "true"
    job = (await api.client.get(f"/jobs/{first.json()['id']}")).json()
    assert job["headers"] == {"traceparent": TRACEPARENT}  # the first request's, kept


async def test_a_batch_item_s_traceparent_works_as_the_header_and_the_request_s_is_not_used(
    api: Api, sender: FakeSender
) -> None:
    await api.put_target()
    items = [
        {
            "idempotency_key": "traced",
            "target": "billing",
            "payload": {},
            "headers": {"traceparent": TRACEPARENT, "tracestate": "a=1"},
        },
        {
            "idempotency_key": "bad",
            "target": "billing",
            "payload": {},
            "headers": {"traceparent": "x"},
        },
        {"idempotency_key": "plain", "target": "billing", "payload": {}},
    ]
    other = f"00-{'5' * 32}-{'6' * 16}-01"
    response = await api.client.post(
        "/jobs/batch", json={"jobs": items}, headers={"traceparent": other}
    )
    assert [r["status"] for r in response.json()["results"]] == [202, 202, 202]
    ids = [r["job"]["id"] for r in response.json()["results"]]
    jobs = [(await api.client.get(f"/jobs/{job_id}")).json() for job_id in ids]
    assert [j["headers"] for j in jobs] == [
        {"traceparent": TRACEPARENT, "tracestate": "a=1"},
        {},
        {},
    ]
    for job_id in ids:
        await api.wait_for_job(job_id, lambda j: j["state"] == "succeeded")
    by_job = {h["webhook-id"]: h for h in sent(sender, 3)}
    traced = trace.parse(by_job[ids[0]]["traceparent"])
    assert traced is not None
    assert (traced.trace_id, by_job[ids[0]]["tracestate"]) == (TRACE_ID, "a=1")
    assert traced.parent_id != PARENT_ID
    assert "traceparent" not in by_job[ids[1]]
    assert "traceparent" not in by_job[ids[2]]


def test_a_job_made_without_an_intake_span_keeps_its_body_s_trace_context() -> None:
    body = JobIn.model_validate(
        {"target": "billing", "payload": {}, "headers": {"TraceParent": TRACEPARENT, "X-A": "1"}}
    )
    job = new_job(1.0, "", "k", body)
    assert job.headers == {"X-A": "1", "traceparent": TRACEPARENT}
    # and its fingerprint is the one a POST /jobs of the same body gets
    assert job.fingerprint == new_job(1.0, "", "k", body, {"X-A": "1"}, None).fingerprint
