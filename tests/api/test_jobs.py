"""Status, listing, counting, attempts, cancel and retry over the real app, and what
holds a job back."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from app.core.outcome import FailureKind
from app.dispatch.sender import Failure
from app.testing import FakeClock, FakeSender, Reply
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


async def known_to_the_dispatcher(api: Api, name: str, **fields: Any) -> None:
    """Wait until the dispatcher holds the target as configured: the hold intake
    shows is what the dispatcher holds, and it reads a target put a moment after."""
    deadline = time.monotonic() + 10
    while True:
        known = api.gateway.dispatcher.known_target(name)
        if known is not None and all(getattr(known.spec, f) == v for f, v in fields.items()):
            return
        assert time.monotonic() < deadline, f"the dispatcher never read target {name}"
        await asyncio.sleep(0.01)


async def test_a_job_shows_its_payload_and_headers_only_when_asked_for_alone(api: Api) -> None:
    await api.put_target(enabled=False)
    payload = {"amount": 42, "items": ["a", "é"], "nested": {"ok": True, "n": None}}
    accepted = await api.post_job(
        "k", {"target": "billing", "payload": payload, "headers": {"X-Trace": "t-1"}}
    )
    job = accepted.json()
    assert job["caller"] is None  # stored while auth is off
    detail = (await api.client.get(f"/jobs/{job['id']}")).json()
    assert detail["payload"] == payload
    assert detail["headers"] == {"X-Trace": "t-1"}
    assert {k: v for k, v in detail.items() if k not in ("payload", "headers")} == job
    plain = (await api.post_job("plain", {"target": "billing", "payload": [1, "x"]})).json()
    plain_detail = (await api.client.get(f"/jobs/{plain['id']}")).json()
    assert (plain_detail["payload"], plain_detail["headers"]) == ([1, "x"], {})

    listed = (await api.client.get("/jobs")).json()["items"]
    cancelled = (await api.client.post(f"/jobs/{job['id']}/cancel")).json()
    for answer in (job, *listed, cancelled):
        assert "payload" not in answer and "headers" not in answer
        assert answer["caller"] is None


async def test_jobs_are_listed_and_counted_by_reason_and_creation_time(
    api_factory: ApiFactory,
) -> None:
    clock = FakeClock(start=float(int(time.time())))
    sender = FakeSender()
    sender.script("http://127.0.0.1:9/hook", [Reply(status=400), Reply(status=503)])
    api = await api_factory(sender=sender, clock=clock)
    await api.put_target("billing", max_attempts=1)
    await api.put_target("parked", enabled=False)
    ids = []
    for i, target in enumerate(("billing", "billing", "parked", "parked")):
        job = (await api.post_job(f"k{i}", {"target": target, "payload": i})).json()
        ids.append(job["id"])
        if target == "billing":
            await api.wait_for_job(job["id"], lambda j: j["state"] == "failed")
        clock.advance(60)
    await api.client.post(f"/jobs/{ids[3]}/cancel")
    second = (await api.client.get(f"/jobs/{ids[1]}")).json()["created_at"]

    async def found(**params: str) -> list[str]:
        listed = await api.client.get("/jobs", params=params)
        assert listed.status_code == 200, listed.text
        counted = await api.client.get("/jobs/count", params=params)
        assert counted.status_code == 200, counted.text
        items = [job["id"] for job in listed.json()["items"]]
        assert counted.json() == {"count": len(items)}
        return items

    assert await found() == ids[::-1]
    assert await found(reason="permanent_status") == [ids[0]]
    assert await found(reason="attempts_exhausted") == [ids[1]]
    assert await found(reason="target_gone") == []
    assert await found(reason="permanent_status", state="queued") == []
    assert await found(created_after=second) == [ids[3], ids[2], ids[1]]
    assert await found(created_before=second) == [ids[0]]
    # one instant, however its offset is written
    local = datetime.fromisoformat(second).astimezone(timezone(timedelta(hours=2))).isoformat()
    assert await found(created_after=local, created_before=local) == []
    assert await found(created_after=local, state="queued", target="parked") == [ids[2]]
    assert await found(caller="anyone") == []
    page = (await api.client.get("/jobs", params={"created_after": second, "limit": 2})).json()
    rest = await api.client.get(
        "/jobs", params={"created_after": second, "cursor": page["next_cursor"]}
    )
    assert [j["id"] for j in rest.json()["items"]] == [ids[1]]


@pytest.mark.parametrize(
    "params",
    [
        {"created_after": "2026-01-01T00:00:00"},
        {"created_before": "2026-01-01"},
        {"created_after": "yesterday"},
        {"created_after": "1767225600"},
        {"created_before": "2026-02-30T00:00:00Z"},
        {"reason": "bad_luck"},
        {"caller": ""},
        {"state": "lost"},
    ],
)
async def test_bad_filters_are_problems_for_the_list_and_the_count(
    api: Api, params: dict[str, str]
) -> None:
    for path in ("/jobs", "/jobs/count"):
        response = await api.client.get(path, params=params)
        assert response.status_code == 422, (path, params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        [error] = response.json()["errors"]
        assert error["loc"] == ["query", *params]


async def test_a_succeeded_job_retried_is_sent_again_its_attempts_counting_on(
    api: Api, sender: FakeSender
) -> None:
    await api.put_target()
    job = (await api.post_job()).json()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
    retried = await api.client.post(f"/jobs/{job['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.headers["location"] == f"/jobs/{job['id']}"
    assert retried.json()["completed_at"] is None
    done = await api.wait_for_job(
        job["id"], lambda j: j["state"] == "succeeded" and j["completed_at"] is not None
    )
    assert done["attempts"] == 1
    history = (await api.client.get(f"/jobs/{job['id']}/attempts")).json()
    assert [(a["n"], a["outcome"]) for a in history] == [(1, "success"), (2, "success")]
    assert [r.headers["csjd-attempt"] for r in sender.requests] == ["1", "2"]


async def test_a_job_at_a_disabled_target_is_held_with_no_end_known(api: Api) -> None:
    await api.put_target(enabled=False)
    await known_to_the_dispatcher(api, "billing", enabled=False)
    accepted = (await api.post_job()).json()
    assert (accepted["held_by"], accepted["held_until"]) == ("disabled", None)
    shown = (await api.client.get(f"/jobs/{accepted['id']}")).json()
    assert (shown["held_by"], shown["held_until"]) == ("disabled", None)
    [listed] = (await api.client.get("/jobs")).json()["items"]
    assert listed["held_by"] == "disabled"
    cancelled = (await api.client.post(f"/jobs/{accepted['id']}/cancel")).json()
    assert (cancelled["held_by"], cancelled["held_until"]) == (None, None)


async def test_a_job_not_yet_due_is_held_by_its_schedule(api: Api) -> None:
    await api.put_target()
    await known_to_the_dispatcher(api, "billing")
    accepted = (await api.post_job(body={"target": "billing", "payload": 1, "delay_s": 60})).json()
    assert accepted["state"] == "scheduled"
    assert (accepted["held_by"], accepted["held_until"]) == (
        "schedule",
        accepted["next_attempt_at"],
    )
    shown = (await api.client.get(f"/jobs/{accepted['id']}")).json()
    assert (shown["held_by"], shown["held_until"]) == ("schedule", accepted["next_attempt_at"])
    now = (await api.post_job("now")).json()
    assert (now["held_by"], now["held_until"]) == (None, None)
    done = await api.wait_for_job(now["id"], lambda j: j["state"] == "succeeded")
    assert (done["held_by"], done["held_until"]) == (None, None)


async def test_a_throttled_targets_jobs_are_held_by_its_pause(api: Api, sender: FakeSender) -> None:
    await api.put_target()
    sender.script("http://127.0.0.1:9/hook", [Reply(status=429, headers={"Retry-After": "120"})])
    job = (await api.post_job()).json()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "retrying")
    paused_until = (await api.client.get("/targets/billing")).json()["state"]["paused_until"]
    assert paused_until is not None
    shown = (await api.client.get(f"/jobs/{job['id']}")).json()
    assert (shown["held_by"], shown["held_until"]) == ("pause", paused_until)
    waiting = (await api.post_job("behind")).json()
    assert (waiting["held_by"], waiting["held_until"]) == ("pause", paused_until)


async def test_an_open_breaker_holds_its_targets_jobs_until_it_probes(
    api: Api, sender: FakeSender
) -> None:
    sender.default = Reply(status=503)
    await api.put_target(max_attempts=100)
    # five failures in a row open it: five first attempts, none waiting for a backoff
    job, *_ = [(await api.post_job(f"k{i}")).json() for i in range(5)]
    deadline = time.monotonic() + 10
    while (target := (await api.client.get("/targets/billing")).json())["state"]["breaker"] != (
        "open"
    ):
        assert time.monotonic() < deadline, target
        await asyncio.sleep(0.01)
    reopens_at = target["state"]["breaker_reopens_at"]
    shown = (await api.client.get(f"/jobs/{job['id']}")).json()
    assert (shown["held_by"], shown["held_until"]) == ("breaker", reopens_at)
    behind = (await api.post_job("behind")).json()
    assert (behind["held_by"], behind["held_until"]) == ("breaker", reopens_at)


async def test_a_target_out_of_rate_tokens_holds_its_due_jobs(api: Api) -> None:
    await api.put_target(rate_limit_per_s=0.001)  # one token, then one every 1000 s
    first = (await api.post_job("first")).json()
    await api.wait_for_job(first["id"], lambda j: j["state"] == "succeeded")
    second = (await api.post_job("second")).json()
    shown = (await api.client.get(f"/jobs/{second['id']}")).json()
    assert shown["state"] == "queued" and shown["held_by"] == "rate"
    free_at = datetime.fromisoformat(shown["held_until"]).timestamp()
    sent_at = datetime.fromisoformat(first["created_at"]).timestamp()
    assert 990 < free_at - sent_at < 1010


async def test_the_etag_changes_with_what_holds_the_job(api: Api) -> None:
    await api.put_target()
    job = (await api.post_job(body={"target": "billing", "payload": 1, "delay_s": 60})).json()
    first = await api.client.get(f"/jobs/{job['id']}")
    assert first.json()["held_by"] == "schedule"
    etag = first.headers["etag"]
    assert (
        await api.client.get(f"/jobs/{job['id']}", headers={"If-None-Match": etag})
    ).status_code == 304

    await api.put_target(enabled=False)  # the job's row is as it was
    await known_to_the_dispatcher(api, "billing", enabled=False)
    changed = await api.client.get(f"/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["held_by"] == "disabled"
    assert changed.json()["updated_at"] == first.json()["updated_at"]
    again = changed.headers["etag"]
    assert again != etag
    assert (
        await api.client.get(f"/jobs/{job['id']}", headers={"If-None-Match": again})
    ).status_code == 304
