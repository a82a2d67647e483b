"""Request limits: body size and nesting, key length, list size; each a problem, nothing stored."""

from __future__ import annotations

from typing import Any

import orjson

from app.api.guard import MAX_JSON_DEPTH
from tests.conftest import Api, ApiFactory

PROBLEM = "application/problem+json"


def nested(depth: int) -> Any:
    """A JSON value that is ``depth`` arrays and objects deep."""
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


def job(payload_depth: int) -> dict[str, Any]:
    # the job object itself is one level
    return {"target": "billing", "payload": nested(payload_depth)}


async def test_json_nested_deeper_than_the_limit_is_422_and_nothing_stored(api: Api) -> None:
    await api.put_target(enabled=False)
    deep = await api.post_job("deep", job(MAX_JSON_DEPTH))
    assert deep.status_code == 422
    assert deep.headers["content-type"] == PROBLEM
    problem = deep.json()
    assert problem["type"].endswith("/json-too-deep")
    assert problem["status"] == 422
    assert f"deeper than {MAX_JSON_DEPTH} levels" in problem["detail"]
    assert problem["max_depth"] == MAX_JSON_DEPTH
    assert (await api.client.get("/jobs")).json()["items"] == []
    # exactly at the limit is fine
    assert (await api.post_job("at-limit", job(MAX_JSON_DEPTH - 1))).status_code == 202


async def test_brackets_inside_strings_do_not_count_as_nesting(api: Api) -> None:
    await api.put_target(enabled=False)
    payload = {"text": '[{"' * 50 + '\\"' + "[" * 50, "list": ["[[[[", "{{{{"] * 20}
    assert orjson.dumps(payload).count(b"[") > MAX_JSON_DEPTH  # not let through by the count
    response = await api.post_job("strings", {"target": "billing", "payload": payload})
    assert response.status_code == 202


async def test_a_wide_but_shallow_body_is_accepted(api: Api) -> None:
    await api.put_target(enabled=False)
    payload = [{"a": [1, {"b": [2]}]} for _ in range(100)]  # hundreds of brackets, depth 5
    response = await api.post_job("wide", {"target": "billing", "payload": payload})
    assert response.status_code == 202


async def test_nesting_is_limited_on_every_json_route(api: Api) -> None:
    body = {"url": "http://127.0.0.1:9/hook", "headers": {"X-Deep": nested(MAX_JSON_DEPTH)}}
    response = await api.client.put("/targets/deep", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/json-too-deep")
    assert (await api.client.get("/targets/deep")).status_code == 404


async def test_a_target_body_over_the_limit_is_413_and_nothing_stored(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(max_body_bytes=2048)
    declared = await api.client.put(
        "/targets/big", json={"url": "http://127.0.0.1:9/hook", "headers": {"X": "x" * 4096}}
    )
    assert declared.status_code == 413
    assert declared.headers["content-type"] == PROBLEM

    async def chunks():  # streamed: no Content-Length to judge by
        yield b'{"url": "http://127.0.0.1:9/hook", "headers": {"X": "'
        for _ in range(10):
            yield b"y" * 1024
        yield b'"}}'

    streamed = await api.client.put(
        "/targets/big", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.headers["content-type"] == PROBLEM
    assert (await api.client.get("/targets/big")).status_code == 404


async def test_a_body_the_client_stopped_sending_is_never_stored(api: Api) -> None:
    """What arrived is valid JSON on its own; the client promised more and left."""
    await api.put_target(enabled=False)
    arrived = b'{"target": "billing", "payload": 1}'
    messages = [
        {"type": "http.request", "body": arrived, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/jobs",
        "raw_path": b"/jobs",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"csjd.test"),
            (b"content-type", b"application/json"),
            (b"content-length", b"100"),
            (b"idempotency-key", b"cut"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("csjd.test", 80),
    }
    await api.app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert (await api.client.get("/jobs")).json()["items"] == []


async def test_the_longest_idempotency_key_is_accepted_and_one_more_is_400(api: Api) -> None:
    await api.put_target(enabled=False)
    assert (await api.post_job("k" * 255)).status_code == 202
    too_long = await api.post_job("k" * 256)
    assert too_long.status_code == 400
    assert too_long.headers["content-type"] == PROBLEM
    assert len((await api.client.get("/jobs")).json()["items"]) == 1


async def test_a_list_limit_above_500_is_422(api: Api) -> None:
    assert (await api.client.get("/jobs", params={"limit": 500})).status_code == 200
    over = await api.client.get("/jobs", params={"limit": 501})
    assert over.status_code == 422
    assert over.headers["content-type"] == PROBLEM
