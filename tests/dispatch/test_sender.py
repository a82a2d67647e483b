"""The real senders (aiohttp, reqwest) against a real local HTTP server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from app.core.outcome import FailureKind
from app.dispatch.reqwest_sender import ReqwestSender
from app.dispatch.sender import MAX_RESPONSE_BYTES, Failure, Request, Response, Sender
from app.testing import Reply, Sink
from tests import peers
from tests.dispatch.conftest import RealSender
from tests.peers import closed_port


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


@pytest.fixture
async def sender(real_sender: RealSender) -> AsyncIterator[Sender]:
    # the sink listens on loopback; the address guard has its own tests (test_ssrf.py)
    s = real_sender(max_connections=8, allow_private=True)
    yield s
    await s.close()


def request(url: str, timeout_s: float = 5.0) -> Request:
    return Request(
        url=url,
        body=b'{"a":1}',
        headers={"content-type": "application/json", "user-agent": "csjd/test"},
        timeout_s=timeout_s,
    )


async def test_sends_the_body_and_headers_and_reads_the_answer(sink: Sink, sender: Sender) -> None:
    sink.script("/hook", [Reply(status=201, headers={"X-Reply": "yes"}, body=b"created")])
    result = await sender.send(request(sink.url("/hook")))
    assert isinstance(result, Response)
    assert (result.status, result.body, result.headers["X-Reply"]) == (201, b"created", "yes")
    got = sink.received("/hook")[0]
    assert got.body == b'{"a":1}'
    assert got.headers["user-agent"] == "csjd/test"
    assert got.headers["accept-encoding"] == "identity"  # the excerpt kept is text
    assert result.headers["x-reply"] == "yes"  # header names in any case


async def test_reads_at_most_64_kib_of_the_answer(sink: Sink, sender: Sender) -> None:
    sink.script("/big", [Reply(body=b"x" * (MAX_RESPONSE_BYTES * 4))])
    result = await sender.send(request(sink.url("/big")))
    assert isinstance(result, Response) and len(result.body) == MAX_RESPONSE_BYTES


async def test_does_not_follow_redirects(sink: Sink, sender: Sender) -> None:
    sink.script("/moved", [Reply(status=302, headers={"Location": "/elsewhere"})])
    result = await sender.send(request(sink.url("/moved")))
    assert isinstance(result, Response) and result.status == 302
    assert sink.received("/elsewhere") == []


async def test_a_hung_target_hits_the_hard_deadline(sink: Sink, sender: Sender) -> None:
    sink.script("/hang", [Reply(hang=True)])
    started = time.monotonic()
    result = await sender.send(request(sink.url("/hang"), timeout_s=0.3))
    assert isinstance(result, Failure) and result.kind is FailureKind.TIMEOUT
    assert time.monotonic() - started < 3  # bounded, not the hour the target would take


async def test_a_slow_body_counts_against_the_same_deadline(sink: Sink, sender: Sender) -> None:
    sink.script("/slow", [Reply(delay_s=2)])
    result = await sender.send(request(sink.url("/slow"), timeout_s=0.3))
    assert isinstance(result, Failure) and result.kind is FailureKind.TIMEOUT


async def test_connection_refused_is_a_refused_connection(sender: Sender) -> None:
    result = await sender.send(request(f"http://127.0.0.1:{closed_port()}/hook"))
    assert isinstance(result, Failure) and result.kind is FailureKind.CONNECTION_REFUSED


async def test_an_unresolvable_host_is_a_dns_failure(sender: Sender) -> None:
    result = await sender.send(request("http://no-such-host.invalid/hook"))
    assert isinstance(result, Failure) and result.kind is FailureKind.DNS


@pytest.mark.parametrize(
    ("handler", "scheme", "kind"),
    [
        (peers.reset, "http", FailureKind.CONNECTION_RESET),
        (peers.hang_up, "http", FailureKind.CONNECTION_RESET),
        (peers.garbage, "http", FailureKind.INVALID_RESPONSE),
        # a plain-text peer where TLS was expected
        (peers.garbage, "https", FailureKind.TLS),
    ],
    ids=["reset", "closed-without-answer", "not-http", "not-tls"],
)
async def test_a_misbehaving_peer_is_named_by_what_it_did(
    sender: Sender, handler: peers.Handler, scheme: str, kind: FailureKind
) -> None:
    async with peers.peer(handler) as port:
        url = f"{scheme}://127.0.0.1:{port}/hook"
        result = await sender.send(request(url))
    assert isinstance(result, Failure) and result.kind is kind, result
    assert result.message.startswith(url)  # the detail is kept whole, for the log


async def test_a_request_that_timed_out_gives_its_slot_back(sink: Sink) -> None:
    # reqwest keeps a request running when the awaiting task is cancelled; each
    # request's own timeout is what ends it, so one slot serves the next request
    sink.script("/hang", [Reply(hang=True)])
    sender = ReqwestSender(max_connections=1, allow_private=True)
    try:
        hung = await sender.send(request(sink.url("/hang"), timeout_s=0.3))
        after = await sender.send(request(sink.url("/hook"), timeout_s=2))
    finally:
        await sender.close()
    assert isinstance(hung, Failure) and hung.kind is FailureKind.TIMEOUT
    assert isinstance(after, Response) and after.status == 200


_PICK = (
    "import sys; from app.gateway import delivery_sender; from app.settings import Settings; "
    "s = delivery_sender(Settings(_env_file=None, delivery_client=sys.argv[1])); "
    "print(type(s).__name__, 'pyreqwest' in sys.modules)"
)


@pytest.mark.parametrize(
    ("client", "picked"),
    [("aiohttp", "AiohttpSender False"), ("reqwest", "ReqwestSender True")],
)
def test_the_setting_picks_the_sender_and_pyreqwest_loads_only_for_its_own(
    client: str, picked: str
) -> None:
    # pyreqwest holds about 7 MB once imported: a gateway on aiohttp never loads it
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSJD_")}
    out = subprocess.run(
        [sys.executable, "-c", _PICK, client], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == picked
