"""End to end: ``csjd serve`` refuses oversized heads itself, and stores nothing for them."""

from __future__ import annotations

import json
import socket

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
