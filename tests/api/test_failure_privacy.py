"""What producers read of a failed delivery: its kind, never where it went.

The real ``AiohttpSender`` delivers to real local sockets that fail in each
way the contract names; the job and its attempts, as ``GET /jobs/{id}`` and
``/attempts`` answer them, must carry exactly the kind's text and nothing of
the target's URL, host or port. The full detail is in the delivery log line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from app.dispatch.sender import AiohttpSender
from app.testing import Sink
from tests import peers
from tests.conftest import ApiFactory


@asynccontextmanager
async def nothing_listens() -> AsyncIterator[int]:
    yield peers.closed_port()


@asynccontextmanager
async def a_live_sink() -> AsyncIterator[int]:
    # something does listen there: only the address policy stops the delivery
    with Sink() as sink:
        yield sink.port


Listener = Callable[[], AbstractAsyncContextManager[int]]


@pytest.mark.parametrize(
    ("listener", "scheme", "allow_private", "shown"),
    [
        (nothing_listens, "http", True, "connection refused"),
        (lambda: peers.peer(peers.reset), "http", True, "connection reset"),
        (lambda: peers.peer(peers.garbage), "http", True, "invalid HTTP response"),
        (lambda: peers.peer(peers.garbage), "https", True, "TLS handshake failed"),
        (lambda: peers.peer(peers.silence), "http", True, "timed out after 0.5 s"),
        (a_live_sink, "http", False, "address refused (private network)"),
    ],
    ids=["refused", "reset", "not-http", "not-tls", "hung", "private"],
)
async def test_a_failed_delivery_shows_its_kind_and_not_the_target(
    api_factory: ApiFactory,
    caplog: pytest.LogCaptureFixture,
    listener: Listener,
    scheme: str,
    allow_private: bool,
    shown: str,
) -> None:
    # registration allows loopback (the settings); the sender may not (the rebinding case)
    api = await api_factory(sender=AiohttpSender(max_connections=8, allow_private=allow_private))
    async with listener() as port:
        url = f"{scheme}://127.0.0.1:{port}/private/hook"
        await api.put_target("billing", url=url, max_attempts=1, timeout_s=0.5)
        job = (await api.post_job()).json()
        with caplog.at_level(logging.INFO, logger="csjd.dispatch"):
            failed = await api.wait_for_job(job["id"], lambda j: j["state"] == "failed")
    assert failed["last_error"] == shown
    read = (await api.client.get(f"/jobs/{job['id']}")).text
    attempts = await api.client.get(f"/jobs/{job['id']}/attempts")
    assert [a["error"] for a in attempts.json()] == [shown]
    for text in (read, attempts.text):
        assert url not in text and "127.0.0.1" not in text and "/private/hook" not in text
    for error in (failed["last_error"], attempts.json()[0]["error"]):
        assert str(port) not in error
    # the operator still learns where it went wrong
    [line] = [r for r in caplog.records if r.getMessage() == "delivery"]
    fields = vars(line)
    assert fields["error"] == shown
    assert url in fields["detail"] or "127.0.0.1" in fields["detail"]
