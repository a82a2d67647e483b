"""The alert rules and the dashboard's queries through promtool, when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.kit import ALERT_TESTS, ALERTS, as_promql, dashboard_exprs
from tests.needs import missing

PROMTOOL = shutil.which("promtool")


@pytest.fixture(autouse=True)
def _require_promtool() -> None:
    """Skips without promtool; under ``CI=true`` (where ``.ci/run`` installs it) fails."""
    if PROMTOOL is None:
        missing(
            "promtool is not installed (Debian: apt-get install prometheus)",
            in_ci="the alert rules must be checked",
        )


def promtool(*args: str, cwd: Path | None = None) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_alert_rules_are_valid() -> None:
    assert "SUCCESS" in promtool("check", "rules", str(ALERTS))


def test_the_alert_unit_tests_pass() -> None:
    """Among them: the breaker alert fires after 5 minutes open, and not before."""
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert any(
        case.get("alertname") == "CsjdBreakerOpen" and case["exp_alerts"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
    )
    assert "SUCCESS" in promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"csjd_dashboard:query_{i}", "expr": as_promql(expr)}
        for i, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert "SUCCESS" in promtool("check", "rules", str(path))
