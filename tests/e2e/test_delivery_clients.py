"""End to end: each delivery client (``CSJD_DELIVERY_CLIENT``) in a real
``csjd serve``, against a real local sink. The sender tests hold both to the
seam's promise; these show the choice changes nothing a target sees."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.testing import Reply, Sink
from tests.e2e.gateway import GatewayProcess

pytestmark = pytest.mark.slow

#: every header a delivery carries, whichever client sends it
DELIVERY_HEADERS = {
    "accept",
    "accept-encoding",
    "content-length",
    "content-type",
    "csjd-attempt",
    "host",
    "idempotency-key",
    "user-agent",
    "webhook-id",
    "webhook-signature",
    "webhook-timestamp",
    "x-tenant",
}


@pytest.mark.parametrize("client", ["aiohttp", "reqwest"])
def test_either_client_sends_the_same_delivery(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink, client: str
) -> None:
    gateway = gateway_factory(CSJD_DELIVERY_CLIENT=client).start()
    gateway.put_target(
        "billing",
        url=sink.url("/hook"),
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        headers={"X-Tenant": "acme"},
    )
    sink.script("/hook", [Reply(status=201, body=b'{"ok":true}')])
    job = gateway.post_job("order-1", "billing", {"amount": 42}).json()
    done = gateway.wait_job(job["id"], ("succeeded",))
    assert done["last_status_code"] == 201
    attempt = gateway.client.get(f"/jobs/{job['id']}/attempts").json()[0]
    assert attempt["response_excerpt"] == '{"ok":true}'
    [got] = sink.received("/hook")
    assert set(got.headers) == DELIVERY_HEADERS
    assert got.headers["user-agent"] == "csjd/0.1.0"
    assert (got.headers["accept"], got.headers["accept-encoding"]) == ("*/*", "identity")
    assert got.body == b'{"amount":42}'


def test_reqwest_cuts_a_hung_target_off_and_goes_on(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    gateway = gateway_factory(CSJD_DELIVERY_CLIENT="reqwest", CSJD_MAX_INFLIGHT="1").start()
    sink.script("/hang", [Reply(hang=True)])
    gateway.put_target("hang", url=sink.url("/hang"), timeout_s=0.5, max_attempts=1)
    gateway.put_target("ok", url=sink.url("/ok"))
    hung = gateway.post_job("k1", "hang", 1).json()
    failed = gateway.wait_job(hung["id"], ("failed",))
    assert failed["last_error"] == "timed out after 0.5 s"
    # the one slot in flight came back: the next job is delivered
    after = gateway.post_job("k2", "ok", 2).json()
    assert gateway.wait_job(after["id"], ("succeeded",))["attempts"] == 1
