"""A test missing a tool skips on a developer's machine and fails in CI, never skips there."""

from __future__ import annotations

import pytest

from tests.needs import missing


def test_a_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no widget"):
        missing("no widget (apt-get install widget)", in_ci="the widget tests must run")


def test_a_missing_tool_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI=true: the widget tests must run"):
        missing("no widget (apt-get install widget)", in_ci="the widget tests must run")
