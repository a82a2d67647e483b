"""End to end: ``csjd serve`` refuses oversized heads itself, and stores nothing for them."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import pytest

from tests.e2e.gateway import GatewayProcess

pytestmark = pytest.mark.slow

JOB = b'{"target": "billing", "payload": 1}'


def send(gateway: GatewayProcess, headers: list[str]) -> tuple[int, dict[str, str], bytes]:
    """POST ``JOB`` to /jobs with ``headers``; the answer, read until the server closes."""
    head = ["POST /jobs HTTP/1.1", "Host: csjd.test", "Idempotency-Key: k", *headers]
    head += ["Content-Type: application/json", f"Content-Length: {len(JOB)}"]
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + JOB)
        raw = b""
        while chunk := sock.recv(65536):  # to EOF: the server closes after refusing
            raw += chunk
    top, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), fields, body


@pytest.mark.parametrize(
    "headers",
    [
        [f"X-H{i}: v" for i in range(100)],  # 100 and the 5 every request here carries
        [f"X-Big-{i}: {'a' * 1024}" for i in range(20)],  # 20 KiB
    ],
    ids=["101-headers", "20-KiB-of-headers"],
)
def test_too_many_or_too_large_headers_are_431_and_store_nothing(
    gateway: GatewayProcess, headers: list[str]
) -> None:
    gateway.put_target("billing", url="http://127.0.0.1:9/hook", enabled=False)
    status, fields, body = send(gateway, headers)
    assert status == 431
    assert fields["content-type"] == "application/problem+json"
    assert fields["connection"] == "close"
    problem = json.loads(body)
    assert problem["status"] == 431 and problem["title"] and problem["detail"]
    assert gateway.client.get("/jobs").json()["items"] == []
    accepted = gateway.post_job("k", "billing", 1)  # a new connection works as ever
    assert accepted.status_code == 202
    assert len(gateway.client.get("/jobs").json()["items"]) == 1


def test_connections_over_the_limit_get_a_503_problem(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gateway = gateway_factory(CSJD_MAX_CONNECTIONS="3", CSJD_MAX_WAITERS="1").start()
    gateway.client.close()  # its kept-alive connection would count too
    idle = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(3)]
    try:
        deadline = time.monotonic() + 10
        while (answer := get(gateway, "/healthz"))[0] != 503:
            assert time.monotonic() < deadline, f"never refused: {answer}"
        _, fields, body = answer
        assert fields["content-type"] == "application/problem+json"
        assert fields["retry-after"] == "1"
        assert json.loads(body)["status"] == 503
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while get(gateway, "/healthz")[0] != 200:
        assert time.monotonic() < deadline, "the closed connections were never given back"


def get(gateway: GatewayProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` on a connection of its own; the answer, read until the server closes."""
    head = f"GET {path} HTTP/1.1\r\nHost: csjd.test\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(head.encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    top, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    fields = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    return int(status_line.split()[1]), fields, body
