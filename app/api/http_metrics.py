"""The HTTP metrics of every route: what a request counted, by method, status and handler.

The series are prometheus-fastapi-instrumentator's default ones, under the same
names, help texts, labels and buckets (``http_requests_total``,
``http_request_size_bytes``, ``http_response_size_bytes``,
``http_request_duration_highr_seconds``, ``http_request_duration_seconds``), so
dashboards and alerts read them as before; the instrumentator's middleware still
times the FastAPI routes and hands each request here (``record``), and the intake
lane, which answers ``POST /jobs`` ahead of that middleware, counts its own
(``observe``). What differs is the cost: the default instrumentation looks up each
labelled series on every request (``labels()``, a lock and a dict of children per
family), while here the four labelled series of a (method, status, handler) are
looked up once and kept. Nothing removes an HTTP series, so a kept one is never stale.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary
from prometheus_fastapi_instrumentator.metrics import Info

#: the default instrumentation's buckets: many and unlabelled, for percentiles ...
HIGHR_BUCKETS = (
    *(0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5),
    *(7.5, 10, 30, 60, float("inf")),
)
#: ... and few, labelled by method and handler
LOWR_BUCKETS = (0.1, 0.5, 1, float("inf"))


@dataclass(frozen=True, slots=True)
class _Series:
    """The labelled series one (method, status, handler) adds to."""

    requests: Counter
    request_size: Summary
    response_size: Summary
    duration: Histogram


class HttpMetrics:
    """The HTTP series on ``registry``; ``record`` is the instrumentator's instrumentation."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests_total",
            "Total number of requests by method, status and handler.",
            ("method", "status", "handler"),
            registry=registry,
        )
        self.request_size = Summary(
            "http_request_size_bytes",
            "Content length of incoming requests by handler. "
            "Only value of header is respected. Otherwise ignored. "
            "No percentile calculated. ",
            ("handler",),
            registry=registry,
        )
        self.response_size = Summary(
            "http_response_size_bytes",
            "Content length of outgoing responses by handler. "
            "Only value of header is respected. Otherwise ignored. "
            "No percentile calculated. ",
            ("handler",),
            registry=registry,
        )
        self.duration_highr = Histogram(
            "http_request_duration_highr_seconds",
            "Latency with many buckets but no API specific labels. "
            "Made for more accurate percentile calculations. ",
            buckets=HIGHR_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. "
            "Made to be only used if aggregation by handler is important. ",
            ("method", "handler"),
            buckets=LOWR_BUCKETS,
            registry=registry,
        )
        self._series: dict[tuple[str, str, str], _Series] = {}

    def _for(self, method: str, status: str, handler: str) -> _Series:
        series = self._series.get((method, status, handler))
        if series is None:
            series = self._series[method, status, handler] = _Series(
                requests=self.requests.labels(method, status, handler),
                request_size=self.request_size.labels(handler),
                response_size=self.response_size.labels(handler),
                duration=self.duration.labels(method, handler),
            )
        return series

    def observe(
        self,
        method: str,
        handler: str,
        status: str,
        request_bytes: int,
        response_bytes: int,
        duration_s: float,
    ) -> None:
        """Count one request; ``status`` is its class (``2xx``), the lengths are the
        declared ones (``Content-Length``, 0 when there is none)."""
        series = self._for(method, status, handler)
        series.requests.inc()
        series.request_size.observe(request_bytes)
        series.response_size.observe(response_bytes)
        self.duration_highr.observe(duration_s)
        series.duration.observe(duration_s)

    def record(self, info: Info) -> None:
        """Count a request the instrumentator's middleware saw, reading its lengths
        as the default instrumentation does, in the same order."""
        series = self._for(info.method, info.modified_status, info.modified_handler)
        series.requests.inc()
        series.request_size.observe(int(info.request.headers.get("Content-Length", 0)))
        response = info.response
        if response and hasattr(response, "headers"):
            series.response_size.observe(int(response.headers.get("Content-Length", 0)))
        else:
            series.response_size.observe(0)
        self.duration_highr.observe(info.modified_duration)
        series.duration.observe(info.modified_duration)
