"""The Grafana dashboard is importable: variables, panels, queries."""

from __future__ import annotations

from itertools import combinations

from tests.deploy.kit import dashboard, dashboard_panels

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_the_dashboard_has_a_prometheus_datasource_and_a_target_variable() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    target = variables["target"]
    assert target["datasource"] == DATASOURCE
    assert target["query"]["query"].startswith("label_values(csjd_inflight")
    assert target["query"]["query"].endswith(", target)")
    assert target["includeAll"] and target["multi"]


def test_every_panel_has_the_datasource_and_a_query() -> None:
    panels = [p for p in dashboard_panels() if p["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"] == DATASOURCE, panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    for a, b in combinations(panels, 2):
        ga, gb = a["gridPos"], b["gridPos"]
        assert ga["x"] + ga["w"] <= 24 and gb["x"] + gb["w"] <= 24
        apart = (
            ga["x"] + ga["w"] <= gb["x"]
            or gb["x"] + gb["w"] <= ga["x"]
            or ga["y"] + ga["h"] <= gb["y"]
            or gb["y"] + gb["h"] <= ga["y"]
        )
        assert apart, f"{a['title']!r} overlaps {b['title']!r}"


def test_the_expected_panels_are_there() -> None:
    titles = " | ".join(p["title"].lower() for p in dashboard_panels())
    for words in (
        "intake rate",
        "delivery rate by outcome",
        "p50 / p99",
        "backlog by state",
        "in flight",
        "breaker state per target",
        "concurrency limit",
        "retries deferred",
        "4xx / 5xx",
    ):
        assert words in titles, words
