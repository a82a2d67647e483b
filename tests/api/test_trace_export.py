"""Trace context with spans recorded by the OpenTelemetry SDK (``app/otel.py``), over the
real app, SQLite and a fake sender: an intake span under the producer's parent, one
attempt span per attempt under it, and the traceparent each attempt sends naming its own
span. The spans go to an in-memory exporter here; tests/e2e/test_trace.py sends them
over OTLP/HTTP from a real process."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from app.core.outcome import FailureKind
from app.dispatch.sender import Failure
from app.gateway import Gateway
from app.main import app_for
from app.otel import OtelTracing
from app.testing import FakeSender, Reply
from tests.conftest import Api, make_settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
URL = "http://127.0.0.1:9/hook"

Start = Callable[..., Any]


@pytest.fixture
async def traced_api(db_url: str) -> AsyncIterator[Start]:
    """Starts an app whose tracing hands its spans to ``processor``."""
    started: list[tuple[Any, httpx.AsyncClient]] = []

    async def start(sender: FakeSender, processor: Any) -> Api:
        provider = TracerProvider()
        provider.add_span_processor(processor)
        gateway = Gateway.build(make_settings(db_url), sender=sender, tracing=OtelTracing(provider))
        app = app_for(gateway)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        started.append((lifespan, client))
        return Api(app, client)

    yield start
    for lifespan, client in reversed(started):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


def hex_of(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def parent_of(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent else None


def no_address_in(spans: tuple[ReadableSpan, ...]) -> None:
    for span in spans:
        shown = [str(v) for v in (span.attributes or {}).values()]
        shown.append(span.status.description or "")
        assert not [s for s in shown if "127.0.0.1" in s or "/hook" in s], span.name


async def test_the_intake_span_is_the_producer_s_child_and_each_attempt_the_intake_s(
    traced_api: Start,
) -> None:
    sender, exporter = FakeSender(), InMemorySpanExporter()
    api = await traced_api(sender, SimpleSpanProcessor(exporter))
    await api.put_target(backoff_initial_s=0.01, backoff_max_s=0.01)
    sender.script(URL, [Reply(status=503), Reply(status=200)])
    job_id = (await api.post_job(traceparent=TRACEPARENT, tracestate="a=1")).json()["id"]
    await api.wait_for_job(job_id, lambda j: j["state"] == "succeeded")

    spans = exporter.get_finished_spans()
    [intake] = [s for s in spans if s.kind is SpanKind.SERVER]
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert intake.name == "POST /jobs"
    assert hex_of(intake)[0] == TRACE_ID
    assert parent_of(intake) == PARENT_ID
    assert intake.attributes is not None
    assert intake.attributes["csjd.job.id"] == job_id
    assert intake.attributes["http.response.status_code"] == 202
    # the job keeps the intake span's context, shown in its headers
    job = (await api.client.get(f"/jobs/{job_id}")).json()
    assert job["headers"] == {
        "traceparent": f"00-{TRACE_ID}-{hex_of(intake)[1]}-01",
        "tracestate": "a=1",
    }

    assert [s.name for s in attempts] == ["deliver billing"] * 2
    for n, (span, request) in enumerate(zip(attempts, sender.requests, strict=True), start=1):
        assert hex_of(span)[0] == TRACE_ID
        assert parent_of(span) == hex_of(intake)[1]
        # the target's spans are children of the attempt span
        assert request.headers["traceparent"] == f"00-{TRACE_ID}-{hex_of(span)[1]}-01"
        assert request.headers["tracestate"] == "a=1"
        assert span.attributes is not None
        assert (span.attributes["csjd.job.id"], span.attributes["csjd.attempt"]) == (job_id, n)
    failed, succeeded = attempts
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "HTTP 503"
    assert failed.attributes is not None
    assert (failed.attributes["http.response.status_code"], failed.attributes["error.type"]) == (
        503,
        "503",
    )
    assert succeeded.status.status_code is StatusCode.UNSET
    assert succeeded.attributes is not None
    assert succeeded.attributes["csjd.outcome"] == "success"
    no_address_in(spans)


async def test_a_job_without_a_trace_starts_one_at_intake_and_its_attempts_continue_it(
    traced_api: Start,
) -> None:
    sender, exporter = FakeSender(), InMemorySpanExporter()
    api = await traced_api(sender, SimpleSpanProcessor(exporter))
    await api.put_target()
    sender.script(URL, [Failure(kind=FailureKind.CONNECTION_REFUSED, message=f"{URL}: refused")])
    job_id = (await api.post_job(traceparent="invalid")).json()["id"]
    await api.wait_for_job(job_id, lambda j: j["state"] == "retrying")
    spans = exporter.get_finished_spans()
    [intake] = [s for s in spans if s.kind is SpanKind.SERVER]
    [attempt] = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert intake.parent is None
    assert hex_of(attempt)[0] == hex_of(intake)[0]
    assert parent_of(attempt) == hex_of(intake)[1]
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.attributes is not None
    assert attempt.attributes["error.type"] == "connection refused"
    assert "http.response.status_code" not in attempt.attributes
    no_address_in(spans)


async def test_each_batch_item_has_its_intake_span_and_a_refused_one_says_why(
    traced_api: Start,
) -> None:
    sender, exporter = FakeSender(), InMemorySpanExporter()
    api = await traced_api(sender, SimpleSpanProcessor(exporter))
    await api.put_target(enabled=False)
    items = [
        {
            "idempotency_key": "a",
            "target": "billing",
            "payload": {},
            "headers": {"traceparent": TRACEPARENT},
        },
        {"idempotency_key": "b", "target": "billing", "payload": {}},
        {"idempotency_key": "c", "target": "nowhere", "payload": {}},
    ]
    response = await api.client.post("/jobs/batch", json={"jobs": items})
    assert [r["status"] for r in response.json()["results"]] == [202, 202, 422]
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["POST /jobs/batch"] * 3
    traced, plain, refused = spans
    assert (hex_of(traced)[0], parent_of(traced)) == (TRACE_ID, PARENT_ID)
    assert plain.parent is None
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes is not None
    assert refused.attributes["http.response.status_code"] == 422


async def test_spans_still_waiting_to_be_sent_are_sent_when_the_gateway_stops(
    db_url: str,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=3_600_000))
    app = app_for(
        Gateway.build(make_settings(db_url), sender=FakeSender(), tracing=OtelTracing(provider))
    )
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            api = Api(app, client)
            await api.put_target(enabled=False)
            assert (await api.post_job(traceparent=TRACEPARENT)).status_code == 202
        assert exporter.get_finished_spans() == ()
    [intake] = exporter.get_finished_spans()
    assert (hex_of(intake)[0], parent_of(intake)) == (TRACE_ID, PARENT_ID)


class _Unanswered(SpanExporter):
    """A collector that never answers (until released)."""

    def __init__(self) -> None:
        self.called = threading.Event()
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.called.set()
        self.release.wait(60)
        return SpanExportResult.SUCCESS


async def test_a_collector_that_never_answers_holds_the_stop_no_longer_than_the_bound() -> None:
    exporter = _Unanswered()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=3_600_000))
    tracing = OtelTracing(provider, stop_timeout_s=0.2)
    tracing.intake(None, "/jobs").refused(RuntimeError("boom"))
    started = time.monotonic()
    await tracing.close()
    try:
        assert time.monotonic() - started < 2
        assert exporter.called.is_set()  # it did try to send the span
    finally:
        exporter.release.set()
