"""The HTTP metrics: the series and values prometheus-fastapi-instrumentator's default
instrumentation makes, whichever way a request is counted (the middleware's ``record``
or the intake lane's ``observe``). How the app counts real requests is in
``test_intake.py`` and ``test_edges.py``."""

from __future__ import annotations

import random
import re

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_fastapi_instrumentator import metrics
from prometheus_fastapi_instrumentator.metrics import Info
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from app.api.http_metrics import HttpMetrics

#: when a series was made: the only text that differs between two registries
CREATED = re.compile(rb"^(\S+_created(?:\{.*\})?) \S+$", re.MULTILINE)


def _exposition(registry: CollectorRegistry) -> bytes:
    return CREATED.sub(rb"\1 T", generate_latest(registry))


def _request(content_length: bytes | None) -> Request:
    headers = [] if content_length is None else [(b"content-length", content_length)]
    return Request({"type": "http", "method": "GET", "headers": headers})


def test_every_request_shows_in_the_same_series_and_values_as_the_default_ones() -> None:
    expected, shown = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    default = metrics.default(registry=expected)
    assert default is not None
    http = HttpMetrics(shown)
    rng = random.Random(7)
    for _ in range(2_000):
        method = rng.choice(["GET", "POST", "PATCH", "DELETE"])
        handler = rng.choice(["/jobs", "/jobs/{job_id}", "/targets/{name}", "none"])
        status = rng.choice(["2xx", "3xx", "4xx", "5xx"])
        # the bucket bounds themselves, and both ends of the buckets
        duration = rng.choice([0.0, 0.01, 0.1, 0.5, 1.0, 60.0, 61.0, rng.random()])
        if rng.random() < 0.5:  # as the intake lane counts: the lengths it knows
            sent, answered = rng.randrange(5_000), rng.randrange(5_000)
            default(
                Info(
                    request=_request(str(sent).encode()),
                    response=Response(headers={"Content-Length": str(answered)}),
                    method=method,
                    modified_handler=handler,
                    modified_status=status,
                    modified_duration=duration,
                )
            )
            http.observe(method, handler, status, sent, answered, duration)
        else:  # as the middleware counts: what the headers say, if anything
            length = rng.choice([None, b"0", b"123"])
            response = rng.choice(
                [
                    None,
                    Response(content=b"", headers=Headers(raw=[(b"content-length", b"77")])),
                    Response(content=b"", status_code=204),
                ]
            )
            info = Info(
                request=_request(length),
                response=response,
                method=method,
                modified_handler=handler,
                modified_status=status,
                modified_duration=duration,
            )
            default(info)
            http.record(info)
    assert _exposition(shown) == _exposition(expected)
    assert b'http_requests_total{handler="/jobs",method="POST",status="2xx"}' in _exposition(shown)
