"""What an operator command writes and reads besides the API: its output, and the
files it is handed.

``Output`` sends a command's result to standard output in the form its reader
needs: with ``--json`` one JSON document; on a terminal the view drawn as
tables fitted to its width (``sheets.render``); through a pipe tab-separated
lines (``sheets.plain``). Progress, notes and questions go to standard error,
progress only on a terminal; ``report_problem`` writes the API's problem
there. ``read_fields`` reads one record (a target, a
schedule) from a JSON or YAML file, or from standard input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from app.console import sheets
from app.console.client import JsonObject, Problem, UsageError

#: the shell's convention for a command stopped by Ctrl-C
INTERRUPTED = 130


class Output:
    """Where results, progress and messages go, and in which form."""

    def __init__(self, *, as_json: bool, wide: bool = False) -> None:
        self.as_json = as_json
        self.wide = wide
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def result(self, document: Any, view: Callable[[], sheets.View]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        elif self.out.is_terminal:
            renderable, needed = sheets.render(view(), self.out.width, wide=self.wide)
            # --wide lets a table be wider than the terminal rather than cut it
            self.out.width = max(self.out.width, needed)
            self.out.print(renderable)
        else:
            text, notes = sheets.plain(view())
            sys.stdout.write(text)
            sys.stdout.flush()
            for note in notes:
                print(note, file=sys.stderr)

    def progress(self, *, total: bool) -> Progress:
        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        return Progress(
            *columns,
            console=self.err,
            # erased when done: a spinner frame left on the line would look like work
            transient=True,
            disable=self.as_json or not self.err.is_terminal,
        )

    def note(self, text: str) -> None:
        """A line for the person running the command (standard error)."""
        self.err.print(Text(text))

    @property
    def can_ask(self) -> bool:
        """Whether a question can be asked and answered: a terminal on both ends."""
        return sys.stdin.isatty() and self.err.is_terminal

    def confirm(self, question: str) -> bool:
        try:
            answer = self.err.input(Text(f"{question} [y/N] "))
        except EOFError:
            answer = ""
        return answer.strip().lower() in ("y", "yes")


def read_fields(name: str, stdin: Callable[[], str], what: str) -> JsonObject:
    """The fields of one ``what`` (a target, a schedule) from a JSON or YAML file, or
    from standard input for ``-``."""
    where = "standard input" if name == "-" else name
    try:
        text = stdin() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {where}: {exc}") from None
    try:
        # JSON is YAML too, except for a few corner cases that json reads better
        body = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"{where} is not valid JSON or YAML: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"{where} must hold one {what}, as a mapping of its fields")
    return body


def report_problem(problem: Problem, *, token_sent: bool, prefix: str = "csjd: ") -> None:
    """The API's problem on standard error, its field errors, and a hint for a 401 or 403."""
    message = f"{problem.title}: {problem.detail}" if problem.detail else problem.title
    print(f"{prefix}{message}", file=sys.stderr)
    for error in problem.errors:
        loc = ".".join(str(part) for part in error.get("loc", []) if part != "body")
        line = f"{loc or '-'}: {error.get('msg', '')}"
        if line not in problem.detail:
            print(f"  {line}", file=sys.stderr)
    hint = _hint(problem.status, token_sent=token_sent)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def _hint(status: int, *, token_sent: bool) -> str | None:
    if status == 401:
        if not token_sent:
            return "the gateway wants an API token: set CSJD_TOKEN (or --token)"
        return "the gateway does not know this token: check CSJD_TOKEN (or --token)"
    if status == 403:
        return (
            "the key in CSJD_TOKEN may not do this; managing targets and schedules needs "
            "an admin key, and so do other callers' jobs (csjd keys new NAME --role admin)"
        )
    if status == 405:
        return "this gateway is older than this csjd and does not offer this command"
    return None
