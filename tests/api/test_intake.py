"""POST /jobs: every row of the contract's intake table, over the real app and SQLite."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest

from app.testing import FakeClock, FakeSender
from tests.conftest import Api, ApiFactory

PROBLEM = "application/problem+json"


async def test_accepted_job_answers_202_with_location_after_commit(api: Api) -> None:
    await api.put_target()
    response = await api.post_job("order-1")
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["idempotency_key"] == "order-1"
    assert job["target"] == "billing"
    assert job["state"] in ("queued", "running", "succeeded")
    assert job["max_attempts"] == 10
    assert "idempotent-replayed" not in response.headers
    # committed: a read on another connection sees it
    assert (await api.client.get(response.headers["location"])).status_code == 200


async def test_same_key_same_request_replays_the_job_as_it_is_now(api: Api) -> None:
    await api.put_target()
    first = (await api.post_job("k")).json()
    await api.wait_for_job(first["id"], lambda j: j["state"] == "succeeded")
    replay = await api.post_job('"k"')  # the quoted form is the same key
    assert replay.status_code == 202
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["location"] == f"/jobs/{first['id']}"
    assert replay.json()["id"] == first["id"]
    assert replay.json()["state"] == "succeeded"


async def test_same_key_with_reordered_keys_is_the_same_request(api: Api) -> None:
    await api.put_target()
    body = {"target": "billing", "payload": {"a": 1, "b": [1, 2]}}
    first = await api.post_job("k", body)
    second = await api.client.post(
        "/jobs",
        content=b'{"payload": {"b": [1.0, 2], "a": 1}, "target": "billing", "delay_s": 0}',
        headers={"Idempotency-Key": "k", "content-type": "application/json"},
    )
    assert second.status_code == 202
    assert second.json()["id"] == first.json()["id"]


async def test_same_key_different_request_is_422_and_changes_nothing(api: Api) -> None:
    await api.put_target()
    first = (await api.post_job("k", {"target": "billing", "payload": {"n": 1}})).json()
    reused = await api.post_job("k", {"target": "billing", "payload": {"n": 2}})
    assert reused.status_code == 422
    assert reused.headers["content-type"] == PROBLEM
    assert reused.json()["type"].endswith("/idempotency-key-reused")
    page = (await api.client.get("/jobs")).json()
    assert [j["id"] for j in page["items"]] == [first["id"]]


async def test_fifty_concurrent_identical_requests_make_one_job(api: Api) -> None:
    await api.put_target()
    responses = await asyncio.gather(*(api.post_job("burst") for _ in range(50)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    assert len((await api.client.get("/jobs")).json()["items"]) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Idempotency-Key": ""},
        {"Idempotency-Key": "x" * 256},
        {"Idempotency-Key": "a b"},
        {"Idempotency-Key": '"unterminated'},
    ],
)
async def test_missing_or_malformed_key_is_400(api: Api, headers: dict[str, str]) -> None:
    await api.put_target()
    response = await api.client.post(
        "/jobs", json={"target": "billing", "payload": 1}, headers=headers
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/invalid-idempotency-key")
    assert (await api.client.get("/jobs")).json()["items"] == []


async def test_two_key_headers_are_400(api: Api) -> None:
    await api.put_target()
    response = await api.client.post(
        "/jobs",
        json={"target": "billing", "payload": 1},
        headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert response.status_code == 400


async def test_unknown_target_is_422(api: Api) -> None:
    response = await api.post_job("k", {"target": "nobody", "payload": {}})
    assert response.status_code == 422
    assert response.json()["type"].endswith("/unknown-target")


async def test_deleted_target_is_422(api: Api) -> None:
    await api.put_target("gone")
    assert (await api.client.delete("/targets/gone")).status_code == 204
    response = await api.post_job("k", {"target": "gone", "payload": {}})
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payload": {}}, "target"),
        ({"target": "billing"}, "payload"),
        ({"target": "billing", "payload": 1, "delay_s": -1}, "delay_s"),
        ({"target": "billing", "payload": 1, "delay_s": "soon"}, "delay_s"),
        ({"target": "billing", "payload": 1, "max_attempts": 0}, "max_attempts"),
        ({"target": "billing", "payload": 1, "run_at": "tomorrow"}, "run_at"),
        ({"target": "billing", "payload": 1, "run_at": "2030-01-01T00:00:00"}, "run_at"),
        ({"target": "billing", "payload": 1, "expires_at": "2001-01-01T00:00:00Z"}, ""),
        ({"target": "billing", "payload": 1, "headers": {"webhook-id": "forged"}}, "headers"),
        ({"target": "billing", "payload": 1, "headers": {"Connection": "close"}}, "headers"),
        ({"target": "billing", "payload": 1, "surprise": True}, "surprise"),
        ({"target": "Bad Name", "payload": 1}, "target"),
    ],
)
async def test_invalid_body_is_422_with_errors(
    api: Api, body: dict[str, object], field: str
) -> None:
    await api.put_target()
    response = await api.post_job("k", body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["status"] == 422 and problem["errors"]
    assert any(field in ".".join(map(str, e["loc"])) for e in problem["errors"])
    assert (await api.client.get("/jobs")).json()["items"] == []


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"target": "billing", "payload": }'])
async def test_malformed_json_is_400(api: Api, raw: bytes) -> None:
    await api.put_target()
    response = await api.client.post(
        "/jobs",
        content=raw,
        headers={"Idempotency-Key": "k", "content-type": "application/json"},
    )
    assert response.status_code in (400, 422)
    if raw:
        assert response.status_code == 400
        assert response.json()["type"].endswith("/malformed-json")


async def test_a_body_without_content_type_is_read_as_json(api: Api) -> None:
    await api.put_target()
    response = await api.client.post(
        "/jobs", content=b'{"target":"billing","payload":1}', headers={"Idempotency-Key": "k"}
    )
    assert response.status_code == 202


async def test_a_non_json_body_is_415(api: Api) -> None:
    response = await api.client.post(
        "/jobs", content=b"<job/>", headers={"Idempotency-Key": "k", "content-type": "text/xml"}
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM


async def test_a_body_over_the_limit_is_413_and_nothing_stored(api_factory: ApiFactory) -> None:
    api = await api_factory(max_body_bytes=2048)
    await api.put_target()
    big = {"target": "billing", "payload": "x" * 4096}
    response = await api.post_job("k", big)
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM

    async def chunks():  # streamed: no Content-Length to judge by
        yield b'{"target": "billing", "payload": "'
        for _ in range(10):
            yield b"y" * 1024
        yield b'"}'

    streamed = await api.client.post(
        "/jobs",
        content=chunks(),
        headers={"Idempotency-Key": "k2", "content-type": "application/json"},
    )
    assert streamed.status_code == 413
    assert (await api.client.get("/jobs")).json()["items"] == []


async def test_a_full_backlog_is_429_with_retry_after_and_nothing_stored(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(max_backlog=2)
    await api.put_target(enabled=False)  # keep the jobs unfinished
    assert (await api.post_job("a")).status_code == 202
    assert (await api.post_job("b")).status_code == 202
    full = await api.post_job("c")
    assert full.status_code == 429
    assert int(full.headers["retry-after"]) > 0
    assert full.json()["type"].endswith("/backlog-full")
    assert len((await api.client.get("/jobs")).json()["items"]) == 2
    assert (await api.post_job("a")).headers["idempotent-replayed"] == "true"


async def test_while_draining_intake_is_503_with_retry_after(api: Api) -> None:
    await api.put_target()
    api.gateway.draining = True
    response = await api.post_job("k")
    assert response.status_code == 503
    assert "retry-after" in response.headers
    api.gateway.draining = False
    assert (await api.client.get("/jobs")).json()["items"] == []


async def test_delay_and_run_at_schedule_the_job(api: Api) -> None:
    await api.put_target()
    delayed = (await api.post_job("d", {"target": "billing", "payload": 1, "delay_s": 3600})).json()
    assert delayed["state"] == "scheduled"
    at = await api.post_job(
        "r", {"target": "billing", "payload": 1, "run_at": "2099-01-01T00:00:00Z"}
    )
    assert at.status_code == 422  # more than a year away
    soon = (
        await api.post_job(
            "s", {"target": "billing", "payload": 1, "run_at": "2000-01-01T00:00:00+00:00"}
        )
    ).json()
    assert soon["state"] in ("queued", "running", "succeeded")  # in the past: due now


async def test_a_job_due_now_wakes_the_dispatcher_and_a_scheduled_one_does_not(api: Api) -> None:
    """The dispatcher's loop claims at once when woken (``tests/dispatch``); this is
    the other half: intake wakes it, so a new job does not wait for a poll."""
    await api.put_target()
    woken: list[str] = []
    wake = api.gateway.wake

    def recording_wake() -> None:
        woken.append("wake")
        wake()

    api.gateway.wake = recording_wake
    await api.post_job("now")
    assert woken == ["wake"]
    await api.post_job("later", {"target": "billing", "payload": 1, "delay_s": 3600})
    assert woken == ["wake"]  # the loop reads when a scheduled job comes due


async def test_job_overrides_take_precedence_over_the_target(api: Api) -> None:
    await api.put_target()
    job = (
        await api.post_job(
            "o",
            {
                "target": "billing",
                "payload": 1,
                "max_attempts": 3,
                "expires_at": "2099-01-01T00:00:00Z",
            },
        )
    ).json()
    assert job["max_attempts"] == 3
    assert job["expires_at"].startswith("2099-01-01T00:00:00")


async def test_intake_is_counted_in_the_http_metrics_like_every_route(api: Api) -> None:
    await api.put_target()
    assert (await api.post_job("m-1")).status_code == 202
    assert (await api.post_job("m-2", {"target": "nobody", "payload": 1})).status_code == 422
    text = (await api.client.get("/metrics")).text
    assert 'http_requests_total{handler="/jobs",method="POST",status="2xx"} 1.0' in text
    assert 'http_requests_total{handler="/jobs",method="POST",status="4xx"} 1.0' in text
    assert 'http_request_duration_seconds_count{handler="/jobs",method="POST"} 2.0' in text


async def test_the_declared_route_answers_as_the_intake_lane_does(api: Api) -> None:
    """The FastAPI route behind the lane gives OpenAPI its shape; it must not drift."""
    await api.put_target()
    by_lane = await api.post_job("same")
    lane, api.app.intake = api.app.intake, None  # the route alone
    try:
        replay = await api.post_job("same")
        fresh = await api.post_job("other")
        bad = await api.post_job("bad", {"target": "billing"})
    finally:
        api.app.intake = lane
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == by_lane.json()["id"]
    assert fresh.status_code == 202 and fresh.json().keys() == by_lane.json().keys()
    assert fresh.headers["location"] == f"/jobs/{fresh.json()['id']}"
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "payload"]
    by_lane_bad = await api.post_job("bad", {"target": "billing"})
    assert by_lane_bad.json()["errors"] == bad.json()["errors"]


async def test_a_database_error_during_intake_is_a_problem(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.put_target()

    async def broken(job: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.gateway.store, "enqueue", broken)
    response = await api.post_job("k")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["detail"] == "an unexpected error occurred"


async def _post_raw(api: Api, key: str, raw: bytes) -> httpx.Response:
    return await api.client.post(
        "/jobs", content=raw, headers={"Idempotency-Key": key, "content-type": "application/json"}
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"123456789012345678901234567890",
        b"18446744073709551616",
        b"-9223372036854775809",
        b'{"n": [1, 1e400]}',
        b"NaN",
        b"[Infinity]",
        b'{"n": -Infinity}',
    ],
)
async def test_a_payload_that_cannot_be_delivered_as_sent_is_422(api: Api, payload: bytes) -> None:
    # integers orjson cannot write were a 500; NaN and infinities were delivered as null
    await api.put_target()
    response = await _post_raw(api, "k", b'{"target": "billing", "payload": ' + payload + b"}")
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["loc"][:2] == ["body", "payload"]
    assert (await api.client.get("/jobs")).json()["items"] == []


async def test_64_bit_integers_are_delivered_exactly(api: Api, sender: FakeSender) -> None:
    await api.put_target()
    payload = b"[18446744073709551615,-9223372036854775808]"
    job = (await _post_raw(api, "k", b'{"target": "billing", "payload": ' + payload + b"}")).json()
    await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded")
    assert [r.body for r in sender.requests] == [payload]


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59.999999Z"])
async def test_an_expiry_the_api_cannot_write_is_422_and_stores_nothing(
    api: Api, expires_at: str
) -> None:
    # these were stored, then answered 500, and made every listing of jobs a 500
    await api.put_target()
    response = await api.post_job(
        "k", {"target": "billing", "payload": 1, "expires_at": expires_at}
    )
    assert response.status_code == 422, response.text
    listing = await api.client.get("/jobs")
    assert listing.status_code == 200 and listing.json()["items"] == []


async def test_the_latest_expiry_allowed_is_shown_as_sent(api: Api) -> None:
    await api.put_target(enabled=False)
    response = await api.post_job(
        "k", {"target": "billing", "payload": 1, "expires_at": "9998-12-31T23:59:59Z"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["expires_at"] == "9998-12-31T23:59:59.000Z"


async def test_one_instant_written_with_another_offset_is_the_same_request(api: Api) -> None:
    await api.put_target(enabled=False)
    first = await api.post_job(
        "k", {"target": "billing", "payload": 1, "expires_at": "2099-01-01T00:00:00Z"}
    )
    again = await api.post_job(
        "k", {"target": "billing", "payload": 1, "expires_at": "2099-01-01T01:00:00+01:00"}
    )
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = await api.post_job(
        "k", {"target": "billing", "payload": 1, "expires_at": "2099-01-01T01:00:00Z"}
    )
    assert other.status_code == 422


async def test_a_time_before_year_one_in_utc_is_422(api: Api) -> None:
    await api.put_target()
    response = await api.post_job(
        "k", {"target": "billing", "payload": 1, "run_at": "0001-01-01T00:00:00+14:00"}
    )
    assert response.status_code == 422, response.text


async def test_a_repeated_request_replays_after_its_expires_at_has_passed(
    api_factory: ApiFactory,
) -> None:
    """The stored job answers a repeat, even when the same body is no longer valid."""
    clock = FakeClock(start=time.time())
    api = await api_factory(sender=FakeSender(), clock=clock)
    await api.put_target(enabled=False)  # the job waits, so its state stays put
    expires_at = clock.now() + 0.5
    body = {
        "target": "billing",
        "payload": 1,
        "expires_at": datetime.fromtimestamp(expires_at, UTC).isoformat(),
    }
    first = await api.post_job("k", body)
    assert first.status_code == 202, first.text
    deadline = time.monotonic() + 5
    while time.time() <= expires_at:  # wall time too: it must be past on every clock
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    clock.advance(5)
    again = await api.post_job("k", body)
    assert again.status_code == 202, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    # a new key with the same body is refused: the time check still stands for new jobs
    fresh = await api.post_job("k2", body)
    assert fresh.status_code == 422
    assert fresh.json()["errors"][0]["loc"] == ["body", "expires_at"]


async def test_a_repeated_request_replays_after_its_run_at_fell_out_of_range(
    api_factory: ApiFactory,
) -> None:
    clock = FakeClock(start=time.time())
    api = await api_factory(sender=FakeSender(), clock=clock)
    await api.put_target()
    run_at = datetime.fromtimestamp(clock.now() + 300 * 86400, UTC).isoformat()
    body = {"target": "billing", "payload": 1, "run_at": run_at}
    first = await api.post_job("k", body)
    assert first.status_code == 202, first.text
    clock.advance(-100 * 86400)  # the producer's clock was ahead; now the year is too short
    again = await api.post_job("k", body)
    assert (again.status_code, again.json()["id"]) == (202, first.json()["id"])
    assert (await api.post_job("k2", body)).status_code == 422
