"""Request limits: body size and nesting, key length, list size; each a problem, nothing stored."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvicorn
from uvicorn.server import ServerState

from app.api.guard import MAX_JSON_DEPTH, nested_deeper_than
from app.api.http_limits import LimitedHttpToolsProtocol
from app.main import create_app
from app.serve import LISTEN_BACKLOG, GatewayServer, server_config
from app.testing import FakeSender
from tests.conftest import Api, ApiFactory, make_settings
from tests.e2e.gateway import free_port

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


# -- the HTTP protocol: header limits and slow clients, over real sockets ------------------------


class QuickProtocol(LimitedHttpToolsProtocol):
    """The limits as served, with deadlines short enough for a test."""

    head_timeout_s = 0.3
    body_timeout_s = 0.3


#: the earliest a deadline of 0.3 s may be seen to pass: an event loop runs a
#: timer once it is due within its clock's resolution (uvloop's: a millisecond)
DEADLINE_SEEN_S = 0.3 - 0.005


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A tiny app: how many headers and body bytes reached it."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = orjson.dumps({"headers": len(scope["headers"]), "body": size})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving(
    app: Any, *, lifespan: str = "off", limit_concurrency: int | None = None
) -> AsyncIterator[int]:
    """``app`` under uvicorn with ``QuickProtocol``, in this process, on a free port."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=QuickProtocol,
        lifespan=lifespan,  # type: ignore[arg-type]
        log_config=None,
        access_log=False,
        limit_concurrency=limit_concurrency,
    )
    server = GatewayServer(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done(), "the server stopped before it started"
        assert time.monotonic() < deadline, "the server never started"
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def problem(self) -> dict[str, Any]:
        """The problem+json body, checked to be one, whole, with the connection closed."""
        assert self.headers["content-type"] == PROBLEM
        assert self.headers["connection"] == "close"
        assert len(self.body) == int(self.headers["content-length"])
        problem: dict[str, Any] = orjson.loads(self.body)
        assert problem["status"] == self.status
        assert problem["type"] and problem["title"] and problem["detail"]
        return problem


async def exchange(port: int, *parts: bytes, timeout: float = 5.0) -> Answer:
    """Send ``parts``, then read until the server closes (status 0: it closed saying nothing).
    ``seconds`` counts from before the connection: the server's first deadline
    runs from its side of it."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)  # to EOF: the server closed
    finally:
        writer.close()
    seconds = time.monotonic() - started
    if not raw:
        return Answer(0, {}, b"", seconds)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return Answer(int(status_line.split()[1]), headers, body, seconds)


def request(*headers: str, method: str = "GET", path: str = "/", body: bytes = b"") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: csjd.test", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_more_than_100_headers_is_431_and_100_are_fine() -> None:
    async with serving(echo) as port:
        many = [f"X-H{i}: v" for i in range(99)]  # with Host and Connection: 101
        refused = await exchange(port, request(*many))
        assert refused.status == 431
        assert "at most 100 headers" in refused.problem()["detail"]
        fine = await exchange(port, request(*many[:98]))
        assert fine.status == 200
        assert orjson.loads(fine.body)["headers"] == 100


async def test_headers_over_16_kib_are_431() -> None:
    async with serving(echo) as port:
        big = [f"X-Big-{i}: {'a' * 1024}" for i in range(20)]
        refused = await exchange(port, request(*big))
        assert refused.status == 431
        assert "16384 bytes" in refused.problem()["detail"]
        long_path = await exchange(port, request(path="/" + "p" * 20_000))
        assert long_path.status == 431
        fine = await exchange(port, request(*big[:12]))
        assert fine.status == 200


async def test_a_stalled_request_line_is_408_within_the_deadline() -> None:
    async with serving(echo) as port:
        stalled = await exchange(port, b"GET /slo")
        assert stalled.status == 408
        assert "headers did not arrive" in stalled.problem()["detail"]
        assert DEADLINE_SEEN_S <= stalled.seconds < 3
        fine = await exchange(port, request())
        assert fine.status == 200


async def test_stalled_headers_are_408_however_slowly_they_trickle() -> None:
    async with serving(echo) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: csjd.test\r\n")
        started = time.monotonic()
        raw = b""
        # a header every 50 ms: each one arrives well within the deadline, the head never does
        while not raw and time.monotonic() - started < 5:
            with contextlib.suppress(ConnectionError):
                writer.write(b"X-Drip: 1\r\n")
            with contextlib.suppress(TimeoutError):
                raw = await asyncio.wait_for(reader.read(65536), 0.05)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 3


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    async with serving(echo) as port:
        silent = await exchange(port)
        assert (silent.status, silent.body) == (0, b"")
        assert DEADLINE_SEEN_S <= silent.seconds < 3


async def test_a_body_that_stops_short_is_408_within_the_deadline() -> None:
    async with serving(echo) as port:
        head = request("Content-Type: application/json", "Content-Length: 100", method="POST")
        stalled = await exchange(port, head + b"0123456789")
        assert stalled.status == 408
        assert "body did not arrive" in stalled.problem()["detail"]
        assert DEADLINE_SEEN_S <= stalled.seconds < 3
        fine = await exchange(
            port, request("Content-Length: 10", method="POST", body=b"0123456789")
        )
        assert fine.status == 200
        assert orjson.loads(fine.body)["body"] == 10


async def test_a_kept_alive_connection_outlives_the_first_deadline() -> None:
    async with serving(echo) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(3):  # paced to take longer than one deadline in all
                writer.write(b"GET / HTTP/1.1\r\nHost: csjd.test\r\n\r\n")
                line = await asyncio.wait_for(reader.readline(), 5)
                assert line.startswith(b"HTTP/1.1 200 ")
                await asyncio.wait_for(reader.readuntil(b"}"), 5)
                await asyncio.sleep(0.15)
        finally:
            writer.close()


async def test_unparsable_http_is_a_400_problem() -> None:
    async with serving(echo) as port:
        garbage = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
        assert garbage.status == 400
        garbage.problem()


class FakeTransport:
    """What the protocol writes, and whether it closed; reads arrive as ``data_received``."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 9000)}.get(name)

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_a_header_that_never_ends_is_431_once_its_reads_outgrow_the_limit() -> None:
    """httptools holds an unfinished header back from the callbacks; the reads still count."""
    config = uvicorn.Config(echo, http=QuickProtocol, lifespan="off", log_config=None)
    config.load()
    protocol = QuickProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: csjd.test\r\nX-Endless: ")
    reads = 0
    while not transport.closed and reads < 100:
        protocol.data_received(b"a" * 4096)
        reads += 1
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert reads * 4096 <= 16384 + 4096  # refused by the first read past the limit
    protocol.connection_lost(None)


async def test_a_request_over_the_connection_limit_is_a_503_problem() -> None:
    async with serving(echo, limit_concurrency=2) as port:
        _, idle = await asyncio.open_connection("127.0.0.1", port)
        try:
            # with the idle one and its own, two connections are open: the limit
            deadline = time.monotonic() + 5
            while (refused := await exchange(port, request())).status != 503:
                assert refused.status == 200
                assert time.monotonic() < deadline, "the idle connection was never counted"
            problem = refused.problem()
            assert problem["type"].endswith("/too-many-connections")
            assert "limit of 2 connections" in problem["detail"]
            assert refused.headers["retry-after"] == "1"
        finally:
            idle.close()
        deadline = time.monotonic() + 5
        while (served := await exchange(port, request())).status != 200:
            assert time.monotonic() < deadline, "the closed connection was never given back"
        assert orjson.loads(served.body)["body"] == 0


def test_the_gateway_is_served_with_its_connection_limits(db_url: str) -> None:
    settings = make_settings(db_url, max_connections=500, max_waiters=100, drain_timeout_s=7)
    config = server_config(create_app(settings), settings, "127.0.0.1", 8080)
    assert config.limit_concurrency == 500
    assert config.backlog == LISTEN_BACKLOG
    assert config.http is LimitedHttpToolsProtocol
    assert config.timeout_graceful_shutdown == 7


async def test_on_the_gateway_requests_over_the_limits_store_nothing(db_url: str) -> None:
    app = create_app(make_settings(db_url), sender=FakeSender())
    async with serving(app, lifespan="on") as port:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as client:
            target = {"url": "http://127.0.0.1:9/hook", "enabled": False}
            assert (await client.put("/targets/billing", json=target)).status_code == 201

            job = b'{"target": "billing", "payload": 1}'  # valid JSON, and a job, on its own
            post = ["Idempotency-Key: k", "Content-Type: application/json"]
            many = [f"X-H{i}: v" for i in range(100)]
            too_many = await exchange(
                port,
                request(*post, *many, f"Content-Length: {len(job)}", method="POST", path="/jobs")
                + job,
            )
            assert too_many.status == 431
            too_many.problem()
            cut = await exchange(
                port, request(*post, "Content-Length: 100", method="POST", path="/jobs") + job
            )
            assert cut.status == 408
            cut.problem()
            slow_target = await exchange(
                port,
                request(
                    "Content-Type: application/json",
                    "Content-Length: 200",
                    method="PUT",
                    path="/targets/slow",
                )
                + orjson.dumps(target),
            )
            assert slow_target.status == 408

            assert (await client.get("/jobs")).json()["items"] == []
            assert (await client.get("/targets/slow")).status_code == 404
            accepted = await client.post(
                "/jobs",
                content=job,
                headers={"Idempotency-Key": "k", "Content-Type": "application/json"},
            )
            assert accepted.status_code == 202


def test_the_depth_check_reads_an_unclosed_string_in_one_pass() -> None:
    """A string that never closes, full of escaped quotes, once made the check
    quadratic (minutes for 256 KiB, on the event loop); it must answer well
    within the deadline, and answer right."""
    hostile = b"[" * 40 + b'"' + b'\\"' * 131_072
    shallow = b"[" * 10 + b'"' + b'\\"' * 131_072
    with ThreadPoolExecutor(max_workers=1) as pool:
        deep = pool.submit(nested_deeper_than, hostile, MAX_JSON_DEPTH)
        flat = pool.submit(nested_deeper_than, shallow, MAX_JSON_DEPTH)
        assert deep.result(timeout=20) is True
        assert flat.result(timeout=20) is False
    assert nested_deeper_than(b'["[[[[", "\\"]]]"]', 2) is False
    assert nested_deeper_than(b'[[["unclosed [[[[', 2) is True
