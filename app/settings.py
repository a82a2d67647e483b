"""Configuration: the contract's ``CSJD_*`` environment variables (and ``.env``).

A ``Settings`` is built once by the entry point and handed to
``Gateway.build`` (``create_app(settings)``); nothing reads the environment
anywhere else. The files it names (API keys, targets) are read by
``app/config.py``. Whether traces are exported is the standard ``OTEL_*``
variables' say, read from the process environment as the OpenTelemetry SDK
reads the rest of them (``app/otel.py``); a ``.env`` file does not reach the
SDK, so it does not count here either.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

MIN_RETENTION_S = 86400
#: the OTLP protocol csjd exports traces over
OTLP_PROTOCOL = "http/protobuf"


def otlp_traces_configured(environ: Mapping[str, str]) -> bool:
    """Whether the standard ``OTEL_*`` variables in ``environ`` ask for traces over
    OTLP: an ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``
    is set, the SDK is not disabled (``OTEL_SDK_DISABLED``), and
    ``OTEL_TRACES_EXPORTER``, when set, names ``otlp``."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters and "otlp" not in {name.strip() for name in exporters.split(",")}:
        return False
    endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    return any(environ.get(name, "").strip() for name in endpoints)


def _otlp_protocol(environ: Mapping[str, str]) -> str:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if value := environ.get(name, "").strip():
            return value
    return OTLP_PROTOCOL


class SqliteSynchronous(StrEnum):
    FULL = "FULL"
    NORMAL = "NORMAL"


class ProcessRole(StrEnum):
    """What one ``csjd serve`` process does (``--role``)."""

    ALL = "all"
    API = "api"
    DISPATCHER = "dispatcher"

    @property
    def dispatches(self) -> bool:
        return self is not ProcessRole.API

    @property
    def duties(self) -> tuple[str, ...]:
        """The per-database locks this role holds: one process per duty."""
        return {"all": ("api", "dispatcher"), "api": ("api",), "dispatcher": ("dispatcher",)}[
            self.value
        ]


class DeliveryClient(StrEnum):
    """``CSJD_DELIVERY_CLIENT``: the HTTP client deliveries go out through.
    aiohttp by default; reqwest (pyreqwest) drains a backlog with a little less
    CPU but holds more memory (docs/performance.md has both)."""

    AIOHTTP = "aiohttp"
    REQWEST = "reqwest"


class LogFormat(StrEnum):
    """``CSJD_LOG_FORMAT``; unset, ``app/logs.py`` picks one for where the output goes."""

    JSON = "json"
    CONSOLE = "console"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CSJD_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = "sqlite+aiosqlite:///./csjd.db"
    targets_file: Path | None = None
    allow_private_targets: bool = False
    max_inflight: int = Field(default=256, ge=1, le=100_000)
    max_backlog: int = Field(default=1_000_000, ge=1)
    shutdown_delay_s: float = Field(default=0.0, ge=0)
    drain_timeout_s: float = Field(default=20.0, ge=0)
    retention_s: int = Field(default=604_800, ge=MIN_RETENTION_S)
    max_body_bytes: int = Field(default=262_144, ge=1024)
    #: the body limit of ``POST /jobs/batch`` (each job in it is held to ``max_body_bytes``)
    max_batch_bytes: int = Field(default=8_388_608, ge=1024)
    #: ``Prefer: wait`` requests waiting at once (and at most 1000 of one caller)
    max_waiters: int = Field(default=10_000, ge=0)
    #: uvicorn's ``limit_concurrency``: open connections, or requests under way,
    #: at which a new request is answered 503
    max_connections: int = Field(default=12_000, ge=2)
    api_keys: str | None = None
    api_keys_file: Path | None = None
    sqlite_synchronous: SqliteSynchronous = SqliteSynchronous.FULL
    delivery_client: DeliveryClient = DeliveryClient.AIOHTTP
    #: None: ``console`` when standard output is a terminal, else ``json``
    log_format: LogFormat | None = None
    _traces_exported: bool = PrivateAttr(default_factory=lambda: otlp_traces_configured(os.environ))

    @property
    def traces_exported(self) -> bool:
        """Spans go out over OTLP/HTTP (``otlp_traces_configured``, at start)."""
        return self._traces_exported

    @model_validator(mode="after")
    def _exported_as_asked(self) -> Settings:
        # another protocol would send protobuf over HTTP to a port that expects gRPC
        protocol = _otlp_protocol(os.environ)
        if otlp_traces_configured(os.environ) and protocol != OTLP_PROTOCOL:
            raise ValueError(
                f"csjd exports traces over OTLP/HTTP ({OTLP_PROTOCOL}) only, "
                f"not {protocol} (OTEL_EXPORTER_OTLP_PROTOCOL)"
            )
        return self

    @model_validator(mode="after")
    def _room_for_the_waiters(self) -> Settings:
        # every waiting request holds a connection; with no room beyond them a
        # full house of long polls would turn every other request away
        if self.max_connections <= self.max_waiters:
            raise ValueError(
                f"CSJD_MAX_CONNECTIONS ({self.max_connections}) must be larger than "
                f"CSJD_MAX_WAITERS ({self.max_waiters}): each waiting request holds a connection"
            )
        return self

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", "delivery_client", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if value.startswith("postgresql://"):  # the usual form: use the async driver
            value = "postgresql+asyncpg://" + value.removeprefix("postgresql://")
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "use sqlite+aiosqlite:///path/to/csjd.db or postgresql+asyncpg://host/db"
            )
        return value

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def database_shown(self) -> str:
        """The database as people may read it in logs and errors: the SQLite file's
        path, or Postgres's user, host, port and database. Never the password, nor
        the query string, where libpq-style options may carry one too."""
        url = make_url(self.database_url)
        if not self.is_postgres:
            database = url.database or ""
            if not database or database == ":memory:" or database.startswith("file:"):
                return f"sqlite {database or ':memory:'}"
            return str(Path(database).resolve())
        user = f"{url.username}@" if url.username else ""
        socket_dir = url.query.get("host")  # asyncpg's unix socket directory
        host = url.host or (socket_dir if isinstance(socket_dir, str) else "localhost")
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return f"postgresql://{user}{host}:{url.port or 5432}/{url.database or ''}"
