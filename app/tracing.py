"""Spans around intake and deliveries: the seam, and the tracing that exports nothing.

Intake asks ``Tracing.intake`` for a span once it knows a job's trace context
(the producer's, ``app/core/trace.py``) and keeps the span's ``context`` in
the job's headers; a delivery asks ``Tracing.attempt`` for a span and sends
its ``traceparent``. ``Untraced``, the tracing of a gateway with no
``OTEL_EXPORTER_OTLP_*`` endpoint, records nothing: a job keeps the
producer's context as it came, and each attempt sends the same trace under a
new random parent id; nothing here imports OpenTelemetry. ``tracing_for``
picks ``app/otel.py`` (the SDK, imported only then) when traces are exported
(``Settings.traces_exported``). The composition root (``app/gateway.py``)
builds one and closes it last.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from app.core import trace
from app.core.job import JobRecord
from app.core.outcome import Classified
from app.core.trace import TraceContext


class IntakeSpan(Protocol):
    """One job's intake, begun: the context the job keeps, and how it ended."""

    @property
    def context(self) -> TraceContext | None: ...

    def accepted(self, job: JobRecord, replayed: bool) -> None: ...

    def refused(self, error: BaseException) -> None: ...


class AttemptSpan(Protocol):
    """One attempt, begun: the ``traceparent`` it sends, and how it ended."""

    @property
    def traceparent(self) -> str | None: ...

    def ended(self, result: Classified) -> None: ...


class Tracing(Protocol):
    def intake(self, parent: TraceContext | None, route: str) -> IntakeSpan:
        """A span for a job taken in by ``route``, a child of ``parent`` (the producer's)."""
        ...

    def attempt(self, job: JobRecord, target: str) -> AttemptSpan:
        """A span for ``job``'s current delivery, a child of the context the job keeps."""
        ...

    async def close(self) -> None:
        """Send what is left, then stop."""
        ...


class _Unrecorded:
    """A span no one records: it passes the context on, and ends as it began."""

    __slots__ = ("context", "traceparent")

    def __init__(self, context: TraceContext | None, traceparent: str | None) -> None:
        self.context = context
        self.traceparent = traceparent

    def accepted(self, job: JobRecord, replayed: bool) -> None:
        pass

    def refused(self, error: BaseException) -> None:
        pass

    def ended(self, result: Classified) -> None:
        pass


_NOTHING = _Unrecorded(None, None)


def _random_bits() -> int:
    return int.from_bytes(os.urandom(8), "big")


class Untraced:
    """No export: the producer's context is kept and continued, nothing recorded."""

    def __init__(self, random_bits: Callable[[], int] = _random_bits) -> None:
        self._random_bits = random_bits

    def intake(self, parent: TraceContext | None, route: str) -> IntakeSpan:
        return _NOTHING if parent is None else _Unrecorded(parent, None)

    def attempt(self, job: JobRecord, target: str) -> AttemptSpan:
        context = trace.of_job(job.headers)
        if context is None:
            return _NOTHING
        parent_id = trace.parent_id_from(self._random_bits())
        return _Unrecorded(None, trace.continued(context, parent_id))

    async def close(self) -> None:
        pass


#: a gateway's tracing when nothing is exported (it keeps no state)
UNTRACED = Untraced()


def tracing_for(exported: bool) -> Tracing:
    """OpenTelemetry's tracing when traces are ``exported``, else ``UNTRACED``."""
    if not exported:
        return UNTRACED
    from app.otel import OtelTracing  # the SDK costs its import only when it is used

    return OtelTracing.from_environment()
