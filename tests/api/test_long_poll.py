"""``GET /jobs/{id}`` with ``Prefer: wait=N``: held until the job's state changes.

Every test that expects an early answer guards the request with a deadline far
shorter than the wait it asked for, so an answer that only came at the end of
the wait fails the test.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.api.routes.jobs import prefer_wait
from app.testing import FakeSender, Reply
from app.watch import JobWatch
from tests.conftest import Api, ApiFactory

EARLY_S = 5.0


async def _scheduled_job(api: Api, key: str = "k1") -> dict[str, Any]:
    await api.put_target()
    posted = await api.post_job(key, body={"target": "billing", "payload": 1, "delay_s": 3600})
    assert posted.status_code == 202
    job: dict[str, Any] = posted.json()
    assert job["state"] == "scheduled"
    return job


async def _until_waiting(api: Api, job_id: str) -> None:
    async with asyncio.timeout(EARLY_S):
        while True:
            if api.gateway.watch.waiting(job_id):
                return
            await asyncio.sleep(0.005)


def _get(api: Api, job_id: str, **headers: str) -> asyncio.Task[httpx.Response]:
    return asyncio.create_task(api.client.get(f"/jobs/{job_id}", headers=headers))


async def _answer(task: asyncio.Task[httpx.Response]) -> httpx.Response:
    async with asyncio.timeout(EARLY_S):
        return await task


async def test_a_waiting_request_answers_when_the_job_is_cancelled(api: Api) -> None:
    job = await _scheduled_job(api)
    waiting = _get(api, job["id"], Prefer="wait=30")
    await _until_waiting(api, job["id"])
    assert not waiting.done()
    assert (await api.client.post(f"/jobs/{job['id']}/cancel")).status_code == 200
    response = await _answer(waiting)
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert response.headers["preference-applied"] == "wait=30"
    assert response.headers["etag"]
    assert api.gateway.watch.waiting(job["id"]) == 0


async def test_a_waiting_request_answers_when_the_dispatcher_moves_the_job(
    api_factory: ApiFactory,
) -> None:
    sender = FakeSender()
    sender.default = Reply(delay_s=0.3)
    api = await api_factory(sender=sender)
    await api.put_target()
    job = (await api.post_job("k")).json()
    first = (await api.client.get(f"/jobs/{job['id']}")).json()["state"]
    states = [first]
    while states[-1] != "succeeded":
        response = await _answer(_get(api, job["id"], Prefer="wait=30"))
        assert response.status_code == 200
        states.append(response.json()["state"])
        assert states[-1] != states[-2], states
    assert set(states) <= {"queued", "running", "succeeded"}


async def test_without_a_change_the_answer_comes_after_the_wait(api: Api) -> None:
    job = await _scheduled_job(api)
    response = await _answer(_get(api, job["id"], Prefer="wait=0.2"))
    assert response.status_code == 200
    assert response.json()["state"] == "scheduled"
    assert response.headers["preference-applied"] == "wait=0.2"


async def test_with_the_current_etag_an_unchanged_job_is_304_after_the_wait(api: Api) -> None:
    job = await _scheduled_job(api)
    etag = (await api.client.get(f"/jobs/{job['id']}")).headers["etag"]
    response = await _answer(_get(api, job["id"], Prefer="wait=0.2", **{"If-None-Match": etag}))
    assert response.status_code == 304
    assert response.headers["etag"] == etag
    assert response.headers["preference-applied"] == "wait=0.2"


async def test_an_etag_change_wakes_a_client_that_names_the_old_one(api: Api) -> None:
    job = await _scheduled_job(api)
    await api.client.post(f"/jobs/{job['id']}/cancel")
    old = (await api.client.get(f"/jobs/{job['id']}")).headers["etag"]
    waiting = _get(api, job["id"], Prefer="wait=30", **{"If-None-Match": old})
    # cancelled is terminal, and terminal jobs answer at once; retry moves it on
    response = await _answer(waiting)
    assert response.status_code == 304
    retry = await api.client.post(f"/jobs/{job['id']}/retry")
    assert retry.status_code == 202
    moved = await _answer(_get(api, job["id"], Prefer="wait=30", **{"If-None-Match": old}))
    assert moved.status_code == 200
    assert moved.json()["state"] in ("queued", "running", "succeeded")


async def test_finished_jobs_and_stale_etags_answer_at_once(api: Api) -> None:
    job = await _scheduled_job(api)
    stale = await _answer(_get(api, job["id"], Prefer="wait=30", **{"If-None-Match": '"old"'}))
    assert stale.status_code == 200 and stale.json()["state"] == "scheduled"
    await api.client.post(f"/jobs/{job['id']}/cancel")
    done = await _answer(_get(api, job["id"], Prefer="wait=30"))
    assert done.json()["state"] == "cancelled"


async def test_draining_releases_every_waiting_request(api: Api) -> None:
    job = await _scheduled_job(api)
    waiting = _get(api, job["id"], Prefer="wait=30")
    await _until_waiting(api, job["id"])
    api.gateway.watch.close()
    response = await _answer(waiting)
    assert response.status_code == 200
    assert response.json()["state"] == "scheduled"


async def test_waiting_on_an_unknown_job_is_404_at_once(api: Api) -> None:
    response = await _answer(_get(api, "0193-unknown", Prefer="wait=30"))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert api.gateway.watch.waiting("0193-unknown") == 0


async def test_a_wait_over_30_seconds_is_held_to_30(api: Api) -> None:
    job = await _scheduled_job(api)
    waiting = _get(api, job["id"], Prefer="respond-async, wait=120")
    await _until_waiting(api, job["id"])
    await api.client.post(f"/jobs/{job['id']}/cancel")
    assert (await _answer(waiting)).headers["preference-applied"] == "wait=30"


@pytest.mark.parametrize(
    ("values", "seconds"),
    [
        ([], None),
        (["wait=5"], 5.0),
        (["WAIT = 2.5"], 2.5),
        (["respond-async, wait=10"], 10.0),
        (["return=minimal", "wait=3"], 3.0),
        (['wait="7"'], 7.0),
        (["wait=99"], 30.0),
        (["wait=abc"], None),
        (["wait=-1"], None),
        (["wait=nan"], None),
        (["return=minimal"], None),
    ],
)
def test_prefer_wait_is_read_as_rfc_7240_says(values: list[str], seconds: float | None) -> None:
    assert prefer_wait(values) == seconds


async def test_an_unusable_wait_is_ignored(api: Api) -> None:
    job = await _scheduled_job(api)
    response = await _answer(_get(api, job["id"], Prefer="wait=soon"))
    assert response.status_code == 200
    assert "preference-applied" not in response.headers


async def test_the_shared_poll_wakes_waiters_whose_job_moved_elsewhere() -> None:
    """Another process changed the job: one read of every watched job wakes its waiters."""
    watch = JobWatch()
    reads: list[list[str]] = []
    versions = {"a": ("queued", 1.0), "b": ("queued", 1.0)}

    async def read(job_ids: list[str]) -> dict[str, tuple[str, float]]:
        reads.append(sorted(job_ids))
        return dict(versions)

    poller = asyncio.create_task(watch.poll(read, interval_s=0.01))
    try:
        with watch.watching("a") as a, watch.watching("b") as b, watch.watching("b") as b2:
            a.version = b.version = b2.version = ("queued", 1.0)
            async with asyncio.timeout(EARLY_S):
                while True:
                    if reads:
                        break
                    await asyncio.sleep(0.005)
            assert not (a.event.is_set() or b.event.is_set())
            versions["b"] = ("running", 2.0)
            async with asyncio.timeout(EARLY_S):
                await b.event.wait()
                await b2.event.wait()
            assert not a.event.is_set()
        assert all(ids == ["a", "b"] for ids in reads)  # one read for all three waiters
        assert watch.waiting("a") == watch.waiting("b") == 0
    finally:
        poller.cancel()


async def test_a_change_committed_while_the_job_is_read_is_not_missed(api: Api) -> None:
    """The read races the commit: it returns the old state while the change is
    announced. The waiter must still wake for it instead of sleeping out the wait."""
    job = await _scheduled_job(api)
    store = api.gateway.store
    read = store.get_job

    async def read_then_cancel(caller: str | None, job_id: str) -> Any:
        before = await read(caller, job_id)
        if before is not None and before.state.value == "scheduled":
            await store.cancel("", job_id, api.gateway.clock.now())  # announced mid-read
        return before

    store.get_job = read_then_cancel
    try:
        response = await _answer(_get(api, job["id"], Prefer="wait=30"))
    finally:
        del store.get_job
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"


# -- how many may wait ------------------------------------------------------------------


async def _until_places(api: Api, count: int, timeout_s: float = EARLY_S) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if api.gateway.watch.places_taken == count:
                return
            await asyncio.sleep(0.005)


async def test_beyond_max_waiters_a_wait_is_answered_at_once_as_without_prefer(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(max_waiters=2)
    job = await _scheduled_job(api)
    waiting = [_get(api, job["id"], Prefer="wait=30") for _ in range(2)]
    await _until_places(api, 2)
    over = await _answer(_get(api, job["id"], Prefer="wait=30"))
    assert over.status_code == 200 and over.json()["state"] == "scheduled"
    assert "preference-applied" not in over.headers
    assert over.headers["etag"]
    await api.client.post(f"/jobs/{job['id']}/cancel")
    for response in [await _answer(w) for w in waiting]:
        assert response.headers["preference-applied"] == "wait=30"
    # the places are given back once the waits end
    assert api.gateway.watch.places_taken == 0
    again = await _answer(_get(api, job["id"], Prefer="wait=0.1"))
    assert again.headers["preference-applied"] == "wait=0.1"


async def test_a_cancelled_wait_gives_its_place_back(api_factory: ApiFactory) -> None:
    api = await api_factory(max_waiters=1)
    job = await _scheduled_job(api)
    waiting = _get(api, job["id"], Prefer="wait=30")
    await _until_places(api, 1)
    waiting.cancel()  # the client gave up: its request is cancelled in the app
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await _until_places(api, 0)
    assert api.gateway.watch.waiting(job["id"]) == 0
    response = await _answer(_get(api, job["id"], Prefer="wait=0.1"))
    assert response.headers["preference-applied"] == "wait=0.1"


async def test_one_caller_may_hold_at_most_1000_waits(api_factory: ApiFactory) -> None:
    roles = {"ops": "admin", "busy": "producer", "other": "producer"}
    tokens = {name: f"{name}-token-0123456789abcdefghij" for name in roles}
    api = await api_factory(
        api_keys=",".join(f"{name}:{tokens[name]}:{role}" for name, role in roles.items())
    )
    auth = {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}
    target = {"url": "http://127.0.0.1:9/hook"}
    assert (await api.client.put("/targets/billing", json=target, headers=auth["ops"])).is_success
    jobs = {}
    for name in ("busy", "other"):
        posted = await api.client.post(
            "/jobs",
            json={"target": "billing", "payload": 1, "delay_s": 3600},
            headers={"Idempotency-Key": name, **auth[name]},
        )
        assert posted.status_code == 202, posted.text
        jobs[name] = posted.json()["id"]
    busy = [_get(api, jobs["busy"], Prefer="wait=30", **auth["busy"]) for _ in range(1000)]
    try:
        await _until_places(api, 1000, timeout_s=30)
        over = await _answer(_get(api, jobs["busy"], Prefer="wait=30", **auth["busy"]))
        assert over.status_code == 200 and "preference-applied" not in over.headers
        # another caller still gets to wait
        other = await _answer(_get(api, jobs["other"], Prefer="wait=0.1", **auth["other"]))
        assert other.headers["preference-applied"] == "wait=0.1"
    finally:
        api.gateway.watch.close()
        await asyncio.gather(*busy)
    assert api.gateway.watch.places_taken == 0


def test_places_are_counted_per_caller_and_in_all() -> None:
    watch = JobWatch(max_waiters=3, max_per_caller=2)
    a1, a2 = watch.place("a"), watch.place("a")
    assert a1 is not None and a2 is not None
    assert watch.place("a") is None  # the caller's share
    b1 = watch.place("b")
    assert b1 is not None
    assert watch.place("c") is None  # the process's
    a1.release()
    a1.release()  # given back once, however often released
    assert watch.places_taken == 2
    c1 = watch.place("c")
    assert c1 is not None
    with c1:
        assert watch.places_taken == 3
    assert watch.places_taken == 2
