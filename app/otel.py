"""Tracing with the OpenTelemetry SDK: a span for each intake and each attempt, sent over OTLP/HTTP.

Imported only when ``app/tracing.py`` finds an OTLP endpoint configured, so a
gateway without one never loads the SDK. ``OtelTracing.from_environment``
builds a tracer provider that the SDK configures from the standard ``OTEL_*``
variables alone (endpoint, headers, timeout, compression, sampler, batch
processor, resource; ``service.name`` is ``csjd`` unless they name one), with
a batch processor, so export happens on the SDK's own thread; ``close`` sends
what is left, waiting 2 s at most. The provider is the gateway's, never
registered as the process's global one.

An intake span (kind server, ``POST /jobs`` or ``POST /jobs/batch``) is a
child of the producer's context, or a root when there is none; the job keeps
the intake span's context, so every attempt span (kind client,
``deliver <target>``) is its child, and the ``traceparent`` an attempt sends
names the attempt span. A job stored while nothing was exported keeps the
producer's context, and its attempts are children of that. Attributes name
the job, the target, the attempt and its answer; never the target's URL or
address (the contract's "What producers may read of a failure" holds for
traces too). Every outcome but success sets the span's status to error.
"""

from __future__ import annotations

import asyncio
import threading

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from app import __version__
from app.core import trace
from app.core.errors import CsjdError
from app.core.job import JobRecord
from app.core.outcome import Classified, Outcome
from app.core.trace import TraceContext

#: how long stopping waits for the last spans to be sent: a part of the stop's
#: margin after the drain (``app/serve.py``, ``SHUTDOWN_MARGIN_S``)
STOP_TIMEOUT_S = 2.0


class _IntakeSpan:
    __slots__ = ("_span", "context")

    def __init__(self, span: Span, state: str | None) -> None:
        self._span = span
        self.context = _context_of(span, state)

    def accepted(self, job: JobRecord, replayed: bool) -> None:
        self._span.set_attributes(
            {
                "csjd.job.id": job.id,
                "csjd.target": job.target,
                "csjd.replayed": replayed,
                "http.response.status_code": 202,
            }
        )
        self._span.end()

    def refused(self, error: BaseException) -> None:
        status, title = (
            (error.status, error.title) if isinstance(error, CsjdError) else (500, "Internal error")
        )
        self._span.set_attribute("http.response.status_code", status)
        self._span.set_attribute("error.type", str(status))
        self._span.set_status(Status(StatusCode.ERROR, title))
        self._span.end()


class _AttemptSpan:
    __slots__ = ("_span", "traceparent")

    def __init__(self, span: Span) -> None:
        self._span = span
        self.traceparent = _context_of(span, None).traceparent

    def ended(self, result: Classified) -> None:
        span = self._span
        span.set_attribute("csjd.outcome", result.outcome.value)
        if result.status_code is not None:
            span.set_attribute("http.response.status_code", result.status_code)
        if result.outcome is not Outcome.SUCCESS:
            # the error a producer reads: the kind of failure, never the address
            error = result.error or result.outcome.value
            kind = str(result.status_code) if result.status_code is not None else error
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


class OtelTracing:
    """Spans made by the SDK's tracer and sent by its batch processor."""

    def __init__(self, provider: TracerProvider, *, stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("csjd", __version__)
        self._stop_timeout_s = stop_timeout_s

    @classmethod
    def from_environment(cls) -> OtelTracing:
        """A provider the ``OTEL_*`` variables configure, exporting over OTLP/HTTP."""
        resource = Resource.create({SERVICE_VERSION: __version__})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "csjd"}))
        # stopping is ``close``'s, bounded; at exit the SDK would wait on a dead collector
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider)

    def intake(self, parent: TraceContext | None, route: str) -> _IntakeSpan:
        span = self._tracer.start_span(
            f"POST {route}",
            context=_parent(parent),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": route},
        )
        return _IntakeSpan(span, parent.state if parent else None)

    def attempt(self, job: JobRecord, target: str) -> _AttemptSpan:
        span = self._tracer.start_span(
            f"deliver {target}",
            context=_parent(trace.of_job(job.headers)),
            kind=SpanKind.CLIENT,
            attributes={
                "csjd.job.id": job.id,
                "csjd.target": target,
                "csjd.attempt": job.delivery,
                "http.request.method": "POST",
            },
        )
        return _AttemptSpan(span)

    async def close(self) -> None:
        """Send the spans still queued and stop, waiting ``stop_timeout_s`` at most."""
        # the exporter blocks (HTTP, retried until its timeout) and a collector that
        # is down would hold the gateway's stop: a daemon thread, waited for a while
        stopping = threading.Thread(
            target=self._provider.shutdown, name="csjd-trace-shutdown", daemon=True
        )
        stopping.start()
        await asyncio.to_thread(stopping.join, self._stop_timeout_s)


def _parent(context: TraceContext | None) -> Context:
    """The SDK's context for a remote parent, or an empty one (a root span)."""
    if context is None:
        return Context()
    parent = SpanContext(
        trace_id=int(context.trace_id, 16),
        span_id=int(context.parent_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(context.flags, 16)),
        trace_state=TraceState.from_header([context.state]) if context.state else None,
    )
    return set_span_in_context(NonRecordingSpan(parent))


def _context_of(span: Span, state: str | None) -> TraceContext:
    """``span``'s context as the job keeps it and the headers carry it."""
    own = span.get_span_context()
    return TraceContext(
        f"{own.trace_id:032x}", f"{own.span_id:016x}", f"{own.trace_flags:02x}", state
    )
