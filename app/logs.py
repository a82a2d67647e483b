"""Structured logging: one event a line on stderr, as JSON or as console text.

Callers log an event name as the message and the facts as ``extra``; the
formatters write them as fields (a process may add the same fields to every
event: each worker of ``csjd serve --workers`` says which it is).
``CSJD_LOG_FORMAT`` picks the format; unset, a person at a terminal gets
console lines (local time, level, event, ``key=value``) and anything else (a
container, a pipe, a file) gets JSON lines with RFC 3339 timestamps. Nothing
here ever sees a token or a secret, because no caller passes one; uvicorn's
colour copies of its messages and any terminal escapes are left out, so a JSON
line is plain data. Every delivery logs a line, so the path stays short: records
leave out what no line shows (the caller's frame, the thread, the process), and
a JSON line's second is written out once per second, not once per line.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TextIO

import orjson

from app.settings import LogFormat

_BARE = logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
_STANDARD = frozenset(
    _BARE | {"message", "asctime", "color_message"}  # uvicorn's coloured copy of the message
)
#: a record's own attributes come first in its ``__dict__`` (``LogRecord.__init__`` sets
#: them); what a caller or a filter adds comes after, so only the rest needs checking
_OWN = len(_BARE)
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
    return {k: v for k, v in islice(record.__dict__.items(), _OWN, None) if k not in _STANDARD}


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, without its ``str()`` and ``%`` when there is nothing to do."""
    msg = record.msg
    if record.args or type(msg) is not str:
        return record.getMessage()
    return msg


class _UtcText:
    """``2026-01-01T00:00:00.123456Z``, as ``datetime.isoformat`` writes it; the
    second's text is kept, since the lines of one second share it."""

    __slots__ = ("_second",)

    def __init__(self) -> None:
        self._second = (-1, "")

    def __call__(self, ts: float) -> str:
        fraction, whole = math.modf(ts)  # rounded as datetime.fromtimestamp rounds
        second, micros = divmod(int(whole) * 1_000_000 + round(fraction * 1_000_000), 1_000_000)
        cached, text = self._second  # one tuple: a thread never reads half of an update
        if cached != second:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)
        return f"{text}.{micros:06d}Z"


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._utc = _UtcText()

    def format(self, record: logging.LogRecord) -> str:
        message = _message(record)
        event: dict[str, Any] = {
            "ts": self._utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _ANSI.sub("", message) if "\x1b" in message else message,
        }
        for k, v in islice(record.__dict__.items(), _OWN, None):
            if k not in _STANDARD:
                event[k] = _ANSI.sub("", v) if isinstance(v, str) and "\x1b" in v else v
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
        message = _message(record)
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


#: what a record looks up that no line here shows, by the switch in ``logging`` that
#: leaves it out and that switch's "off": the caller's file, line and function (a walk
#: up the stack on every event), the thread, the process id and the process name
RECORD_EXTRAS: dict[str, object] = {
    "_srcfile": None,
    "logThreads": False,
    "logProcesses": False,
    "logMultiprocessing": False,
}


def _lean_records() -> None:
    """Records without what no line shows, as the logging HOWTO's "Optimization"
    section describes; the formats above write none of it, and an exception's
    traceback comes from ``exc_info``, not from the caller's frame."""
    for switch, off in RECORD_EXTRAS.items():
        setattr(logging, switch, off)


#: loggers whose information lines say nothing an operator needs: uvicorn's start
#: and stop lines repeat csjd's (gateway_started, draining) and name keys csjd does
#: not use, and alembic announces each plugin and migration step (csjd logs
#: ``migrated``); their warnings and errors still show
QUIETED = ("uvicorn.access", "uvicorn.error", "aiosqlite", "alembic")


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
    _lean_records()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in QUIETED:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return fmt
