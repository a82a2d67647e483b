"""Running ``csjd`` in-process against a respx-mocked gateway.

``csjd`` runs it with standard output and error captured, as through a pipe;
``csjd_tty`` runs it on a real pseudo-terminal of a given width and replays
what was written to it (``screen``), so a test reads what the operator's
terminal shows once the command is done.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import struct
import sys
import termios
import threading
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

    def rows(self) -> list[list[str]]:
        """Standard output read as tab-separated values, header line first."""
        return list(csv.reader(io.StringIO(self.out), delimiter="\t", quoting=csv.QUOTE_NONE))

    def row(self, *needles: str) -> list[str]:
        return self.line(*needles).split("\t")


Csjd = Callable[..., Run]


@pytest.fixture(autouse=True)
def wide_plain_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal, so rich would size itself from COLUMNS; no colours either way."""
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


@dataclass(frozen=True)
class Screen:
    code: int
    #: everything written to the terminal, escape sequences included
    raw: str
    #: the terminal's lines once the command is done, trailing blanks dropped
    lines: list[str]

    def line(self, *needles: str) -> str:
        found = [ln for ln in self.lines if all(n in ln for n in needles)]
        assert len(found) == 1, f"{needles} in {len(found)} lines of:\n" + "\n".join(self.lines)
        return found[0]


CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")


def screen(written: str) -> list[str]:
    """Replay what a program wrote to a terminal: the lines left on it.

    Knows the sequences rich writes (cursor up, down, to a column, erase in
    line, cursor visibility, colours); any other escape fails the test rather
    than be misread. Lines are never wrapped, so a line longer than the
    terminal stays visible as one.
    """
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(written):
        char = written[i]
        if char == "\x1b":
            match = CSI.match(written, i)
            assert match is not None, f"unknown escape sequence {written[i : i + 12]!r}"
            params, final = match.groups()
            i = match.end()
            if final in "mhl":  # colours; cursor shown or hidden
                continue
            n = int(params) if params.isdigit() else None
            line = lines[row]
            if final == "A":
                row = max(0, row - (n or 1))
            elif final == "B":
                row += n or 1
            elif final == "C":
                col += n or 1
            elif final == "D":
                col = max(0, col - (n or 1))
            elif final == "G":
                col = (n or 1) - 1
            elif final == "K" and (n or 0) == 0:
                del line[col:]
            elif final == "K" and n == 1:
                line[: col + 1] = [" "] * min(col + 1, len(line))
            elif final == "K" and n == 2:
                line.clear()
            else:
                raise AssertionError(f"unknown escape sequence {match.group()!r}")
        else:
            i += 1
            if char == "\r":
                col = 0
            elif char == "\n":
                row += 1
            else:
                line = lines[row]
                line.extend(" " * (col + 1 - len(line)))
                line[col] = char
                col += 1
        lines.extend([] for _ in range(row + 1 - len(lines)))
    while lines and not "".join(lines[-1]).strip():
        lines.pop()
    return ["".join(line).rstrip() for line in lines]


class _Typist:
    """Standard input on the terminal: ``text`` is typed when the program reads a line
    (after its question is on the screen), and the terminal echoes it there."""

    def __init__(self, follower: int, master: int, text: str) -> None:
        self._file = open(follower, encoding="utf-8", closefd=False)  # noqa: SIM115
        self._master, self._text = master, text

    def isatty(self) -> bool:
        return self._file.isatty()

    def fileno(self) -> int:
        return self._file.fileno()

    def readline(self, size: int = -1) -> str:
        os.write(self._master, self._text.encode())
        return self._file.readline(size)

    def close(self) -> None:
        self._file.close()


#: written after the command, so the reader knows it has read everything before it
_END = "\n<<end of csjd's output>>"

CsjdTty = Callable[..., Screen]


@pytest.fixture
def csjd_tty(monkeypatch: pytest.MonkeyPatch) -> CsjdTty:
    """``csjd`` with standard output and error on one pseudo-terminal ``columns`` wide;
    with ``typed``, standard input too, and that text typed on it in advance."""

    def run(
        *argv: str, columns: int = 80, env: dict[str, str] | None = None, typed: str | None = None
    ) -> Screen:
        environ = {"CSJD_URL": URL, "CSJD_TOKEN": TOKEN} if env is None else env
        monkeypatch.setenv("COLUMNS", str(columns))
        monkeypatch.setenv("TERM", "xterm-256color")
        monkeypatch.delenv("NO_COLOR", raising=False)  # a terminal gets colours and styles
        master, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        terminal = open(follower, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        received = bytearray()

        def read() -> None:
            while _END.encode() not in received:
                try:
                    received.extend(os.read(master, 65536))
                except OSError:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        saved = sys.stdout, sys.stderr, sys.stdin
        sys.stdout = sys.stderr = terminal
        if typed is not None:
            sys.stdin = _Typist(follower, master, typed)  # type: ignore[assignment]
        try:
            code = main(list(argv), environ)
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            if sys.stdin is not saved[2]:
                sys.stdin.close()
            sys.stdout, sys.stderr, sys.stdin = saved
            terminal.write(_END)
            terminal.flush()
            reader.join(timeout=10)
            terminal.close()
            os.close(follower)
            os.close(master)
        assert not reader.is_alive(), "the terminal's output was not all read"
        written = received.decode().split(_END)[0]
        return Screen(code, written, screen(written))

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
        "caller": None,
        "held_by": None,
        "held_until": None,
        **fields,
    }


def attempt(n: int, **fields: Any) -> dict[str, Any]:
    """An attempt as ``GET /jobs/{id}/attempts`` answers it: a 503 by default."""
    return {
        "n": n,
        "started_at": f"2026-01-01T00:00:{n:02d}.000Z",
        "finished_at": f"2026-01-01T00:00:{n:02d}.120Z",
        "duration_ms": 120.4,
        "status_code": 503,
        "outcome": "retryable",
        "error": "HTTP 503",
        "response_excerpt": "busy",
        "content_type": "text/plain",
        "response_bytes": 4,
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
