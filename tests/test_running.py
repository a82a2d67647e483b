"""Running csjd, in process: the log formats, how the database is named, and the
API's pages served without internet access. The same lines from real processes
(start, busy port, unusable databases, Ctrl-C) are in ``tests/e2e/test_running.py``."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app import logs
from app.settings import LogFormat, Settings
from tests.conftest import Api, ApiFactory

#: RFC 3339, as the JSON lines write it (UTC, microseconds)
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
#: a console line: local date and time to the millisecond, level, event, fields
CONSOLE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\w+) +(\S+)(.*)$")


def _record(message: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    return logging.getLogger("uvicorn.error").makeRecord(
        "uvicorn.error", level, __file__, 1, message, None, None, extra=extra
    )


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``logs.configure`` sets up the whole process's logging: put it back after."""
    root = logging.getLogger()
    touched = [root, *map(logging.getLogger, logs.QUIETED)]
    handlers, levels = root.handlers[:], [logger.level for logger in touched]
    switches = {name: getattr(logging, name) for name in logs.RECORD_EXTRAS}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        for logger, level in zip(touched, levels, strict=True):
            logger.setLevel(level)
        for name, value in switches.items():
            setattr(logging, name, value)


@pytest.mark.parametrize(
    ("terminal", "expected"), [(True, LogFormat.CONSOLE), (False, LogFormat.JSON)]
)
@pytest.mark.usefixtures("root_logging")
def test_the_log_format_follows_whether_standard_output_is_a_terminal(
    terminal: bool, expected: LogFormat
) -> None:
    class Stdout(io.StringIO):
        def isatty(self) -> bool:
            return terminal

    assert logs.configure(None, stdout=Stdout()) is expected
    # CSJD_LOG_FORMAT, when set, wins
    assert logs.configure(LogFormat.JSON, stdout=Stdout()) is LogFormat.JSON


@pytest.mark.usefixtures("root_logging")
def test_a_json_line_has_its_fields_in_order_and_the_exception_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure(LogFormat.JSON, fields={"worker": "dispatcher"})
    before = time.time()
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("csjd.dispatch").exception(
            "delivery_error", extra={"job_id": "j-1", "target": "billing", "attempt": 2}
        )
    [line] = capsys.readouterr().err.splitlines()
    event = json.loads(line)
    assert list(event) == [
        *("ts", "level", "logger", "event"),
        *("job_id", "target", "attempt", "worker", "exc"),
    ]
    assert (event["level"], event["logger"], event["event"]) == (
        "error",
        "csjd.dispatch",
        "delivery_error",
    )
    assert (event["job_id"], event["target"], event["attempt"]) == ("j-1", "billing", 2)
    assert event["worker"] == "dispatcher"
    assert event["exc"].startswith("Traceback") and event["exc"].endswith("ValueError: boom")
    written = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()
    assert before - 1e-3 <= written <= time.time() + 1e-3


def test_json_times_are_written_to_the_microsecond_across_seconds() -> None:
    """One formatter writes many lines: each is its own instant, seconds shared or not
    (a line of another thread may come in a little out of order)."""
    formatter = logs.JsonFormatter()
    second = 1_767_225_599  # 2025-12-31T23:59:59Z
    instants = [
        *(second + 0.25, second + 0.9999994, second + 0.9999995, second + 1.0),
        *(second + 0.5, second + 1.0000005, second + 1.123456789, 0.0, second + 61.0),
    ]
    for created in instants:
        record = _record("tick")
        record.created = created
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds")
        assert json.loads(formatter.format(record))["ts"] == expected.replace("+00:00", "Z")


def test_an_event_that_is_not_text_is_written_as_its_text() -> None:
    record = _record("ignored")
    record.msg = KeyError("target")
    assert json.loads(logs.JsonFormatter().format(record))["event"] == "'target'"


def test_json_lines_have_rfc3339_times_and_no_terminal_colours() -> None:
    # what uvicorn logs: the message, and a coloured copy of it among the extras
    record = _record(
        "Started server process [%d]",
        color_message="Started server process [\x1b[36m%d\x1b[0m]",
        detail="\x1b[1mbold\x1b[0m words",
    )
    record.args = (42,)
    line = logs.JsonFormatter().format(record)
    assert "\x1b" not in line and "color_message" not in line
    event = json.loads(line)
    assert event["event"] == "Started server process [42]"
    assert event["detail"] == "bold words"
    assert RFC3339.match(event["ts"]), event["ts"]
    written = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
    assert abs(written.timestamp() - record.created) < 1e-3
    assert written.tzinfo is not None and written.utcoffset() == UTC.utcoffset(None)


def test_console_lines_are_local_time_level_event_and_fields() -> None:
    record = _record(
        "gateway_started",
        color_message="ignored",
        url="http://127.0.0.1:8080",
        api_keys=2,
        description="two words",
        empty="",
    )
    line = logs.ConsoleFormatter().format(record)
    match = CONSOLE.match(line)
    assert match, line
    stamp, level, event, fields = match.groups()
    local = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    assert stamp == local  # the machine's local time, not seconds since 1970
    assert (level, event) == ("INFO", "gateway_started")
    assert fields.split(" ", 1)[1] == (
        'url=http://127.0.0.1:8080 api_keys=2 description="two words" empty=""'
    )
    assert "color_message" not in line


def test_a_console_line_shows_the_detail_right_after_the_event() -> None:
    record = _record("draining", signal="SIGINT", detail="stopping, no deliveries in flight")
    line = logs.ConsoleFormatter().format(record)
    assert line.split(" ", 3)[3].strip() == (
        "draining: stopping, no deliveries in flight signal=SIGINT"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://csjd:hunter2-secret@db.internal:6432/jobs",
            "postgresql://csjd@db.internal:6432/jobs",
        ),
        (
            "postgresql+asyncpg://csjd@db.internal/jobs?password=hunter2-secret&ssl=require",
            "postgresql://csjd@db.internal:5432/jobs",
        ),
        ("postgresql://csjd:hunter2-secret@[::1]/jobs", "postgresql://csjd@[::1]:5432/jobs"),
        (
            "postgresql://csjd:hunter2-secret@/jobs?host=/run/postgresql",
            "postgresql://csjd@/run/postgresql:5432/jobs",
        ),
        ("sqlite+aiosqlite:///:memory:", "sqlite :memory:"),
    ],
)
def test_the_database_is_named_without_its_password(url: str, shown: str) -> None:
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    assert settings.database_shown == shown
    assert "hunter2" not in settings.database_shown


def test_a_sqlite_database_is_named_by_its_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(_env_file=None, database_url="sqlite+aiosqlite:///./data/csjd.db")  # type: ignore[call-arg]
    assert settings.database_shown == str(tmp_path / "data" / "csjd.db")


# -- the API's pages, offline ----------------------------------------------------------

KEYS = "ops:ops-token-0123456789abcdef0123:admin"
#: what each asset must be served as
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
#: the URLs a page makes the browser load: scripts, styles, icons
REFERENCES = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


@pytest.fixture
async def secured(api_factory: ApiFactory) -> Api:
    """A gateway with auth on: the pages and their assets must still need no key."""
    return await api_factory(api_keys=KEYS)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_api_pages_load_everything_from_csjd_itself(secured: Api, page: str) -> None:
    started = time.monotonic()
    response = await secured.client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"https?://|//cdn|fonts\.googleapis", html), html
    assets = REFERENCES.findall(html)
    assert {Path(a).suffix for a in assets} >= {".js", ".png"}
    for asset in assets:
        assert asset.startswith("/"), asset  # same origin
        got = await secured.client.get(asset)
        assert got.status_code == 200, (asset, got.text[:200])
        assert got.headers["content-type"].startswith(CONTENT_TYPES[Path(asset).suffix])
        assert len(got.content) > 1000
    schema = await secured.client.get("/openapi.json")
    assert schema.status_code == 200 and schema.json()["info"]["title"] == "csjd"
    assert time.monotonic() - started < 10


async def test_swagger_ui_gets_its_stylesheet_and_redirect_page(secured: Api) -> None:
    html = (await secured.client.get("/docs")).text
    assert any(a.endswith(".css") for a in REFERENCES.findall(html))
    assert (await secured.client.get("/docs/oauth2-redirect")).status_code == 200


async def test_other_files_beside_the_assets_still_need_a_key(secured: Api) -> None:
    response = await secured.client.get("/docs/assets/nothing-here.js")
    assert response.status_code == 401
