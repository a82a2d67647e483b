"""Every series the dashboard and the alerts ask for exists in a real csjd's /metrics."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.testing import Sink
from tests.deploy.kit import (
    EXTERNAL,
    FUNCTIONS,
    alert_rules,
    all_exprs,
    dashboard_exprs,
    parse_expr,
    selectors,
)
from tests.e2e.gateway import GatewayProcess

#: labels Prometheus adds to every scraped series
TARGET_LABELS = {"job", "instance"}
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


def test_the_parser_finds_metrics_not_functions_keywords_labels_or_numbers() -> None:
    metrics, functions = parse_expr(
        'histogram_quantile(0.99, sum by (target, le) (rate(a_bucket{target=~"$target"}'
        "[$__rate_interval]))) > 1e3 and on (job) b unless ignoring (x) c offset 5m "
        "or deriv(max(d)[15m:1m]) * 3600 > bool 0 and\n(e)"
    )
    assert metrics == {"a_bucket", "b", "c", "d", "e"}
    assert functions == {"histogram_quantile", "sum", "rate", "deriv", "max"}


def test_the_kit_uses_known_functions_and_names_csjd_or_prometheus_series() -> None:
    for expr in all_exprs():
        metrics, functions = parse_expr(expr)
        assert metrics, f"no metric in {expr!r}"
        assert functions <= FUNCTIONS, f"unknown function in {expr!r}"
        for name in metrics:
            assert name.startswith(("csjd_", "http_")) or EXTERNAL.match(name), name


def test_http_status_matchers_use_the_instrumentations_groups() -> None:
    """prometheus-fastapi-instrumentator labels status as 2xx/4xx/5xx, not 503."""
    for expr in all_exprs():
        for _, matchers in selectors(expr):
            for label, _, value in matchers:
                if label == "status":
                    assert set(value.split("|")) <= {"1xx", "2xx", "3xx", "4xx", "5xx"}, expr


def test_every_alert_has_a_summary_description_runbook_and_severity() -> None:
    rules = alert_rules()
    assert {"CsjdBreakerOpen", "CsjdBacklogGrowing", "CsjdDeliveryFailureRate"} <= {
        r["alert"] for r in rules
    }
    for rule in rules:
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Metric name -> label names, from a real gateway that delivered a job."""
    workdir: Path = tmp_path_factory.mktemp("gateway")
    with Sink() as sink:
        gateway = GatewayProcess(workdir).start()
        try:
            gateway.put_target("hook", url=sink.url("/hook"))
            created = gateway.post_job("deploy-kit-1", "hook", {"n": 1})
            assert created.status_code == 202, created.text
            gateway.wait_job(created.json()["id"], ("succeeded",))
            assert gateway.client.get("/jobs/no-such-job").status_code == 404  # a 4xx
            deadline = time.monotonic() + 15
            while True:  # csjd_jobs is refreshed every 5 s
                text = gateway.client.get("/metrics").text
                if 'csjd_jobs{state="succeeded"} 1.0' in text:
                    break
                assert time.monotonic() < deadline, text
                time.sleep(0.2)
        finally:
            gateway.stop()
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        # a family without samples yet (csjd_retries_deferred_total) still has its TYPE line
        for suffix in SUFFIXES.get(family.type, ("",)):
            found.setdefault(family.name + suffix, set())
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


@pytest.mark.slow
def test_every_series_in_the_dashboard_and_alerts_is_served(
    live_metrics: dict[str, set[str]],
) -> None:
    assert {"csjd_breaker_state", "csjd_deliveries_total", "http_requests_total"} <= set(
        live_metrics
    )
    used: set[str] = set()
    for expr in all_exprs():
        metrics, _ = parse_expr(expr)
        used |= metrics
        for name in metrics:
            assert name in live_metrics or EXTERNAL.match(name), f"{name} in {expr!r}"
        for name, matchers in selectors(expr):
            labels = live_metrics.get(name)
            if not labels:  # external, or no sample yet to show its labels
                continue
            for label, _, _ in matchers:
                assert label in labels | TARGET_LABELS, f"{name} has no label {label}: {expr!r}"
    # the dashboard covers every csjd metric
    csjd = {n for n in live_metrics if n.startswith("csjd_") and not n.endswith("_created")}
    histograms = {"csjd_delivery_duration_seconds_count", "csjd_delivery_duration_seconds_sum"}
    dashboard_metrics = set().union(*(parse_expr(e)[0] for e in dashboard_exprs()))
    assert csjd - histograms <= dashboard_metrics
