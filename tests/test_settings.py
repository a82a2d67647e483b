"""Configuration from CSJD_* variables, and the refusals that keep it honest."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import DeliveryClient, LogFormat, Settings, SqliteSynchronous


def test_defaults_are_the_contracts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("CSJD_"):
            monkeypatch.delenv(name)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.database_url == "sqlite+aiosqlite:///./csjd.db"
    assert (s.max_inflight, s.max_backlog, s.max_body_bytes) == (256, 1_000_000, 262_144)
    assert (s.shutdown_delay_s, s.drain_timeout_s, s.retention_s) == (0, 20, 604_800)
    assert s.allow_private_targets is False
    assert s.sqlite_synchronous is SqliteSynchronous.FULL
    assert s.log_format is None  # chosen by where the output goes (app/logs.py)
    assert s.max_waiters == 10_000
    assert s.max_connections == 12_000
    assert s.delivery_client is DeliveryClient.AIOHTTP


def test_a_plain_postgres_url_gets_the_async_driver() -> None:
    s = Settings(_env_file=None, database_url="postgresql://db.internal/csjd")  # type: ignore[call-arg]
    assert s.database_url == "postgresql+asyncpg://db.internal/csjd"
    assert s.is_postgres


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSJD_MAX_INFLIGHT", "32")
    monkeypatch.setenv("CSJD_SQLITE_SYNCHRONOUS", "normal")
    monkeypatch.setenv("CSJD_ALLOW_PRIVATE_TARGETS", "true")
    monkeypatch.setenv("CSJD_LOG_FORMAT", "CONSOLE")
    monkeypatch.setenv("CSJD_DELIVERY_CLIENT", "Reqwest")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.max_inflight == 32
    assert s.sqlite_synchronous is SqliteSynchronous.NORMAL
    assert s.allow_private_targets is True
    assert s.log_format is LogFormat.CONSOLE
    assert s.delivery_client is DeliveryClient.REQWEST


@pytest.mark.parametrize(
    "overrides",
    [
        {"retention_s": 3600},
        {"sqlite_synchronous": "OFF"},
        {"max_inflight": 0},
        {"database_url": "mysql+aiomysql://localhost/test"},
        {"log_format": "xml"},
        {"delivery_client": "curl"},
        {"max_waiters": 5000, "max_connections": 5000},
        {"max_connections": 1},
    ],
)
def test_settings_that_cannot_work_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
