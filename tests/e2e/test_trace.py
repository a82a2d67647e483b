"""End to end: trace context through a real ``csjd serve`` to a real sink, and spans
exported over OTLP/HTTP to a real receiver, the gateway configured by OTEL_* alone."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from app.core import trace
from app.testing import Received, Reply, Sink
from tests.e2e.gateway import GatewayProcess

pytestmark = pytest.mark.slow

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
#: retry at once: the test waits on the second attempt
FAST_RETRIES = {"backoff_initial_s": 0.05, "backoff_max_s": 0.05}


def traced_post(gateway: GatewayProcess, key: str, **headers: str) -> dict[str, Any]:
    response = gateway.client.post(
        "/jobs",
        json={"target": "billing", "payload": {"key": key}},
        headers={"Idempotency-Key": key, **headers},
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def contexts(received: list[Received]) -> list[trace.TraceContext]:
    found = [trace.parse(r.headers["traceparent"]) for r in received]
    assert None not in found, [r.headers.get("traceparent") for r in received]
    return [c for c in found if c is not None]


def test_each_attempt_carries_the_producer_s_trace_under_a_new_parent(
    gateway: GatewayProcess, sink: Sink
) -> None:
    gateway.put_target("billing", url=sink.url("/hook"), **FAST_RETRIES)
    sink.script("/hook", [Reply(status=503)], then=Reply(status=200))
    job = traced_post(gateway, "traced", traceparent=TRACEPARENT, tracestate="congo=t61rcWkgMzE")
    done = gateway.wait_job(job["id"], ("succeeded",))
    assert done["attempts"] == 2
    got = sink.received("/hook")
    assert [r.status for r in got] == [503, 200]
    sent = contexts(got)
    assert {c.trace_id for c in sent} == {TRACE_ID}
    parents = [c.parent_id for c in sent]
    assert len(set(parents)) == 2
    assert PARENT_ID not in parents
    assert [r.headers["tracestate"] for r in got] == ["congo=t61rcWkgMzE"] * 2
    assert gateway.job(job["id"])["headers"] == {
        "traceparent": TRACEPARENT,
        "tracestate": "congo=t61rcWkgMzE",
    }


def test_a_batch_item_s_traceparent_is_continued_as_the_header_is(
    gateway: GatewayProcess, sink: Sink
) -> None:
    gateway.put_target("billing", url=sink.url("/hook"))
    items = [
        {
            "idempotency_key": "in-batch",
            "target": "billing",
            "payload": {},
            "headers": {"traceparent": TRACEPARENT},
        },
        {"idempotency_key": "plain", "target": "billing", "payload": {}},
    ]
    response = gateway.client.post("/jobs/batch", json={"jobs": items})
    assert [r["status"] for r in response.json()["results"]] == [202, 202]
    traced_id, plain_id = (r["job"]["id"] for r in response.json()["results"])
    got = sink.wait_for(lambda received: len(received) == 2)
    by_job = {r.headers["webhook-id"]: r for r in got}
    [context] = contexts([by_job[traced_id]])
    assert context.trace_id == TRACE_ID
    assert context.parent_id != PARENT_ID
    assert "traceparent" not in by_job[plain_id].headers


def test_a_malformed_traceparent_is_ignored_and_the_job_accepted_without_a_trace(
    gateway: GatewayProcess, sink: Sink
) -> None:
    gateway.put_target("billing", url=sink.url("/hook"))
    job = traced_post(gateway, "malformed", traceparent=f"00-{TRACE_ID}-{PARENT_ID}-1")
    assert gateway.wait_job(job["id"], ("succeeded",))["headers"] == {}
    [received] = sink.received("/hook")
    assert "traceparent" not in received.headers


# -- export over OTLP/HTTP --------------------------------------------------------------


def hexed(raw: bytes) -> str:
    return raw.hex()


def spans_in(received: list[Received]) -> list[tuple[dict[str, Any], Span]]:
    """Every span the receiver got, with its resource's attributes."""
    found = []
    for request in received:
        export = ExportTraceServiceRequest()
        export.ParseFromString(request.body)
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                found.extend((resource, span) for span in scope_spans.spans)
    return found


def attributes(span: Span) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        values[a.key] = getattr(a.value, kind) if kind else None
    return values


def wait_spans(
    receiver: Sink, predicate: Callable[[list[Span]], bool], timeout: float = 20.0
) -> list[Span]:
    deadline = time.monotonic() + timeout
    while True:
        spans = [span for _, span in spans_in(receiver.received("/v1/traces"))]
        if predicate(spans):
            return spans
        assert time.monotonic() < deadline, f"the receiver has {len(spans)} spans"
        time.sleep(0.05)


def test_the_intake_and_each_attempt_are_exported_as_spans_of_the_producer_s_trace(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    with Sink() as receiver:
        gateway = gateway_factory(
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
            OTEL_BSP_SCHEDULE_DELAY="50",
            OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
        ).start()
        gateway.put_target("billing", url=sink.url("/hook"), **FAST_RETRIES)
        sink.script("/hook", [Reply(status=503)], then=Reply(status=200))
        job = traced_post(gateway, "exported", traceparent=TRACEPARENT)
        gateway.wait_job(job["id"], ("succeeded",))

        spans = wait_spans(receiver, lambda spans: len(spans) >= 3)
        by_kind = {
            kind: [s for s in spans if s.kind == kind]
            for kind in (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT)
        }
        [intake] = by_kind[Span.SPAN_KIND_SERVER]
        attempts = sorted(
            by_kind[Span.SPAN_KIND_CLIENT], key=lambda s: attributes(s)["csjd.attempt"]
        )
        assert len(spans) == 3

        # the intake span continues the producer's trace; the job keeps its context
        assert (hexed(intake.trace_id), hexed(intake.parent_span_id)) == (TRACE_ID, PARENT_ID)
        assert intake.name == "POST /jobs"
        assert attributes(intake)["csjd.job.id"] == job["id"]
        intake_id = hexed(intake.span_id)
        assert gateway.job(job["id"])["headers"] == {"traceparent": f"00-{TRACE_ID}-{intake_id}-01"}

        # each attempt span is the intake's child, and the target's parent
        sent = contexts(sink.received("/hook"))
        assert [a.name for a in attempts] == ["deliver billing"] * 2
        for n, (attempt, context) in enumerate(zip(attempts, sent, strict=True), start=1):
            assert hexed(attempt.trace_id) == context.trace_id == TRACE_ID
            assert hexed(attempt.parent_span_id) == intake_id
            assert hexed(attempt.span_id) == context.parent_id
            assert attributes(attempt)["csjd.attempt"] == n
        failed, succeeded = attempts
        assert failed.status.code == failed.status.STATUS_CODE_ERROR
        assert failed.status.message == "HTTP 503"
        assert attributes(failed)["http.response.status_code"] == 503
        assert succeeded.status.code == succeeded.status.STATUS_CODE_UNSET
        assert attributes(succeeded)["http.response.status_code"] == 200
        # never the target's address
        dumped = json.dumps([attributes(s) for s in spans] + [s.status.message for s in spans])
        assert "127.0.0.1" not in dumped
        assert "/hook" not in dumped

        [(resource, _), *_] = spans_in(receiver.received("/v1/traces"))
        assert resource["service.name"] == "csjd"
        assert resource["deployment.environment"] == "test"
        gateway.stop()
        assert "traces_exported" in gateway.logs()
