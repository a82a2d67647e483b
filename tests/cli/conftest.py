"""Running ``csjd`` in-process against a respx-mocked gateway, on a fixed-width console."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import respx

from app.cli import main

URL = "http://gateway.test:8080"
TOKEN = "csjd_test-token-0123456789abcdef"
WIDTH = 220


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def line(self, *needles: str) -> str:
        """The one line of output holding every needle (a table row)."""
        lines = [ln for ln in self.out.splitlines() if all(n in ln for n in needles)]
        assert len(lines) == 1, f"{needles} in {len(lines)} lines of:\n{self.out}"
        return lines[0]


Csjd = Callable[..., Run]


@pytest.fixture(autouse=True)
def wide_plain_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich sizes itself from COLUMNS when not on a terminal; no colours either way."""
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture
def mock_api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
def csjd(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Csjd:
    def run(*argv: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Run:
        environ = {"CSJD_URL": URL, "CSJD_TOKEN": TOKEN} if env is None else env
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        try:
            code = main(list(argv), environ)
        except SystemExit as exc:  # argparse refusing the command line
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def target(name: str = "billing", **state: Any) -> dict[str, Any]:
    live = {
        "breaker": "closed",
        "breaker_reopens_at": None,
        "paused_until": None,
        "concurrency_limit": 16,
        "inflight": 0,
        "backlog": {"scheduled": 0, "queued": 0, "running": 0, "retrying": 0},
        "disabled_reason": None,
    }
    enabled = state.pop("enabled", True)
    live.update(state)
    return {
        "name": name,
        "url": f"https://{name}.example.com/hook",
        "timeout_s": 10.0,
        "max_concurrency": 16,
        "rate_limit_per_s": None,
        "max_attempts": 10,
        "backoff_initial_s": 1.0,
        "backoff_max_s": 600.0,
        "max_retry_duration_s": 86400.0,
        "secret": None,
        "headers": {},
        "enabled": enabled,
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z",
        "state": live,
    }


def job(job_id: str, state: str = "succeeded", **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "idempotency_key": f"key-{job_id}",
        "target": "billing",
        "state": state,
        "attempts": 1,
        "max_attempts": 10,
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:01.000Z",
        "next_attempt_at": None,
        "expires_at": "2026-01-02T00:00:00.000Z",
        "completed_at": "2026-01-01T00:00:01.000Z",
        "last_status_code": 200,
        "last_error": None,
        "failure_reason": None,
        **fields,
    }


def problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": f"https://csjd.dev/problems/{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
