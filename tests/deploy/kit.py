"""Reading the deployment kit in ``deploy/``: its files and its PromQL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "csjd-alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "csjd-alerts.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "csjd-dashboard.json"
KUBERNETES = DEPLOY / "kubernetes"

#: series that Prometheus or kube-state-metrics make, not csjd
EXTERNAL = re.compile(r"^(up|kube_\w+)$")

KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "atan2", "inf", "nan",
}  # fmt: skip

#: the PromQL functions and aggregations the kit may use
FUNCTIONS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "group", "rate", "irate", "increase", "delta",
    "idelta", "deriv", "predict_linear", "histogram_quantile", "abs", "absent",
    "absent_over_time", "clamp", "clamp_min", "clamp_max", "vector", "scalar",
    "time", "label_replace", "label_join", "max_over_time", "min_over_time",
    "avg_over_time", "sum_over_time", "count_over_time", "last_over_time",
    "changes", "resets", "round", "ceil", "floor", "sort", "sort_desc",
}  # fmt: skip

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MODIFIER_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(\s*\()?")
_SELECTOR = re.compile(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", re.DOTALL)


def parse_expr(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, function names) used in a PromQL expression."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _MODIFIER_LIST.sub(" ", text)  # label lists of by (...), on (...)
    metrics: set[str] = set()
    functions: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if name in KEYWORDS:
            continue
        if call:
            functions.add(name)
        else:
            metrics.add(name)
    return metrics, functions


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Every ``name{matchers}`` in an expression, as (name, [(label, op, value)])."""
    return [(m.group(1), _MATCHER.findall(m.group(2))) for m in _SELECTOR.finditer(expr)]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_panels() -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # inside collapsed rows
    return panels


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            found = _LABEL_VALUES.match(query)
            assert found, f"variable {var['name']}: not a label_values() query: {query}"
            exprs.append(found.group(1))
    return exprs


def all_exprs() -> list[str]:
    return [rule["expr"] for rule in alert_rules()] + dashboard_exprs()


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables filled in."""
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("${datasource}", "")
        .replace("$job", ".*")
        .replace("$target", ".*")
    )


def kubernetes_objects() -> list[dict[str, Any]]:
    objects = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects
