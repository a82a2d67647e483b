"""Structured logging: one event a line on stderr, as JSON or as console text.

Callers log an event name as the message and the facts as ``extra``; the
formatters write them as fields (a process may add the same fields to every
event: each worker of ``csjd serve --workers`` says which it is).
``CSJD_LOG_FORMAT`` picks the format; unset, a person at a terminal gets
console lines (local time, level, event, ``key=value``) and anything else (a
container, a pipe, a file) gets JSON lines with RFC 3339 timestamps. Nothing
here ever sees a token or a secret, because no caller passes one; uvicorn's
colour copies of its messages and any terminal escapes are left out, so a JSON
line is plain data.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from app.settings import LogFormat

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}  # uvicorn's coloured copy of the message
)
#: terminal control sequences (colours, cursor moves)
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
#: a console value that needs quotes to stay one field
_NEEDS_QUOTES = re.compile(r'[\s"=]|^$')
#: the field a console line shows right after the event: what a person reads first
DETAIL = "detail"


def default_format(stdout_is_terminal: bool) -> LogFormat:
    """The format when ``CSJD_LOG_FORMAT`` is unset."""
    return LogFormat.CONSOLE if stdout_is_terminal else LogFormat.JSON


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def _plain(value: Any) -> Any:
    if isinstance(value, str) and "\x1b" in value:
        return _ANSI.sub("", value)
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _plain(record.getMessage()),
        }
        event.update((k, _plain(v)) for k, v in _fields(record).items())
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(event, default=str).decode()


def _console_value(value: Any) -> str:
    if not isinstance(value, str):  # numbers, lists, mappings: their JSON, without spaces
        return orjson.dumps(value, default=str).decode()
    return orjson.dumps(value).decode() if _NEEDS_QUOTES.search(value) else value


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        fields = _fields(record)
        message = record.getMessage()
        if isinstance(detail := fields.pop(DETAIL, None), str):
            message = f"{message}: {detail}"
        extras = " ".join(f"{k}={_console_value(v)}" for k, v in fields.items())
        line = f"{stamp} {record.levelname:<7} {message} {extras}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _Stamp(logging.Filter):
    """Adds the same fields to every event (a worker's ``worker=api``, say)."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        super().__init__()
        self._fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self._fields.items():
            record.__dict__.setdefault(key, value)
        return True


def configure(
    fmt: LogFormat | None,
    level: int = logging.INFO,
    stdout: TextIO | None = None,
    fields: Mapping[str, str] | None = None,
) -> LogFormat:
    """Send every logger's events to stderr in ``fmt`` (or the default for
    ``stdout``), each with ``fields`` added; the format chosen."""
    if fmt is None:
        fmt = default_format((stdout or sys.stdout).isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON else ConsoleFormatter())
    if fields:
        handler.addFilter(_Stamp(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own start and stop lines repeat csjd's (gateway_started, draining)
    # and name keys csjd does not use; its warnings and errors still show
    for noisy in ("uvicorn.access", "uvicorn.error", "aiosqlite", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return fmt
