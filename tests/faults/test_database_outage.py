"""A gateway whose Postgres stops and starts again, and targets that answer bytes.

The server is a private one, stopped for real in the middle of the test; the
target is a real socket. What producers see is asserted over HTTP.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from app.dispatch.sender import AiohttpSender
from app.testing import Reply, Sink
from tests.conftest import Api, ApiFactory
from tests.faults.postgres import PrivatePostgres
from tests.faults.targets import BINARY_BODY, Behaviour, HostileTarget

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_url(private_postgres: PrivatePostgres) -> str:
    return private_postgres.migrated_database()


async def _eventually_status(api: Api, method: str, path: str, status: int, **kw: object) -> None:
    deadline = time.monotonic() + 20
    while (await api.client.request(method, path, **kw)).status_code != status:  # type: ignore[arg-type]
        assert time.monotonic() < deadline, f"{method} {path} never answered {status}"
        await asyncio.sleep(0.1)


async def test_while_postgres_is_down_every_request_is_a_503_with_retry_after(
    api_factory: ApiFactory, private_postgres: PrivatePostgres, pg_url: str
) -> None:
    api = await api_factory(database_url=pg_url)
    await api.put_target()
    job = (await api.post_job("before")).json()
    with private_postgres.down():
        answers = {
            "intake": await api.post_job("during"),
            "job": await api.client.get(f"/jobs/{job['id']}"),
            "jobs": await api.client.get("/jobs"),
            "attempts": await api.client.get(f"/jobs/{job['id']}/attempts"),
            "targets": await api.client.get("/targets"),
            "put_target": await api.client.put(
                "/targets/other", json={"url": "http://127.0.0.1:9/x"}
            ),
            "cancel": await api.client.post(f"/jobs/{job['id']}/cancel"),
            "readyz": await api.client.get("/readyz"),
        }
        for name, response in answers.items():
            assert response.status_code == 503, (name, response.text)
            assert response.headers["retry-after"], name
            assert response.headers["content-type"] == "application/problem+json", name
        problem = answers["intake"].json()
        assert problem["type"].endswith("/database-unavailable")
        assert "sqlalchemy" not in answers["intake"].text.lower()
    await _eventually_status(api, "GET", "/readyz", 200)
    # the producer sends the refused job again, with the same key: one job
    again = await api.post_job("during")
    assert again.status_code == 202, again.text
    assert "idempotent-replayed" not in again.headers
    listed = (await api.client.get("/jobs")).json()["items"]
    assert sorted(j["idempotency_key"] for j in listed) == ["before", "during"]


async def test_an_answer_in_flight_when_postgres_stops_is_written_once_it_is_back(
    api_factory: ApiFactory, private_postgres: PrivatePostgres, pg_url: str
) -> None:
    """The target acknowledges while the database is down; the result waits, and the
    job ends succeeded after its one attempt, not rescued and not sent again."""
    sender = AiohttpSender(max_connections=8, allow_private=True)
    with Sink() as sink:
        sink.answer("/slow", Reply(status=200, delay_s=1.5))
        api = await api_factory(database_url=pg_url, sender=sender)
        await api.put_target(url=sink.url("/slow"))
        job = (await api.post_job("k")).json()
        deadline = time.monotonic() + 10
        while not sink.received("/slow"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        committer = api.gateway.store.committer
        with private_postgres.down():
            # down until the answer has come back and its write has failed
            deadline = time.monotonic() + 20
            while not committer.failing:
                assert time.monotonic() < deadline, "the result was never written to a down server"
                await asyncio.sleep(0.05)
        done = await api.wait_for_job(job["id"], lambda j: j["state"] == "succeeded", 30)
        assert done["attempts"] == 1
        attempts = (await api.client.get(f"/jobs/{job['id']}/attempts")).json()
        assert [a["outcome"] for a in attempts] == ["success"]
        assert len(sink.received("/slow")) == 1


async def test_a_binary_answer_is_stored_and_does_not_fail_the_other_writes(
    api_factory: ApiFactory, pg_url: str
) -> None:
    """NUL bytes and invalid UTF-8 from a target, through the real client, onto
    Postgres (which refuses NUL in text): the attempt keeps what text it can,
    the media type and the length; other producers' jobs in flight are stored."""
    sender = AiohttpSender(max_connections=16, allow_private=True)
    with HostileTarget(Behaviour.BINARY, status=500) as binary, Sink() as sink:
        api = await api_factory(database_url=pg_url, sender=sender)
        await api.put_target("bin", url=binary.url(), max_attempts=1)
        await api.put_target("ok", url=sink.url("/ok"))
        bad = await api.post_job("bad", {"target": "bin", "payload": 1})
        others = await asyncio.gather(
            *(api.post_job(f"ok-{i}", {"target": "ok", "payload": i}) for i in range(30))
        )
        assert bad.status_code == 202 and all(r.status_code == 202 for r in others)
        failed = await api.wait_for_job(bad.json()["id"], lambda j: j["state"] == "failed", 20)
        assert (failed["last_status_code"], failed["last_error"]) == (500, "HTTP 500")
        [attempt] = (await api.client.get(f"/jobs/{failed['id']}/attempts")).json()
        assert attempt["content_type"] == "application/octet-stream"
        assert attempt["response_bytes"] == len(BINARY_BODY)
        assert "binary" in attempt["response_excerpt"] and "\ufffd" in attempt["response_excerpt"]
        assert "\x00" not in attempt["response_excerpt"]
        for response in others:
            await api.wait_for_job(response.json()["id"], lambda j: j["state"] == "succeeded", 20)
        assert len(binary.received()) == 1
