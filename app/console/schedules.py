"""``csjd schedules list|show|put|delete``: the commands, and what the operator reads.

Each command is one API call (``client.py``) and one view, drawn by
``output.py`` as the other commands' are: a table fitted to the terminal, tab
separated lines through a pipe, the API's JSON with ``--json``. ``put``
builds the whole ``PUT /schedules/{name}`` body from a file and the flags
over it; the gateway checks it (cron, time zone, target) and its refusal is
printed as any problem is.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rich.text import Text

from app.console.client import Api, JsonObject, UsageError
from app.console.output import Output, read_fields
from app.console.sheets import Cell, Column, Fields, Sheet, View, cell

if TYPE_CHECKING:
    from app.console.actions import Action


def _fire_time(value: object) -> str:
    """A fire time without its milliseconds: fire times are whole seconds."""
    return str(value).replace(".000Z", "Z")


def _next(schedule: JsonObject) -> Cell:
    if not schedule.get("enabled", True):
        return Text("disabled", style="dim")
    next_run_at = schedule.get("next_run_at")
    return None if next_run_at is None else Text(_fire_time(next_run_at))


def _last(schedule: JsonObject) -> Cell:
    """When it last fired, and whether that made a job."""
    if not schedule.get("last_run_at"):
        return Text("never", style="dim")
    text = Text(_fire_time(schedule["last_run_at"]))
    if schedule.get("last_error"):
        text.append(" skipped", style="bold red")
    return text


NAME = Column("name", lambda s: cell(s.get("name"), "bold"), key=True)
CRON = Column("cron", lambda s: cell(s.get("cron")), floor=9)
TARGET = Column("target", lambda s: cell(s.get("target")), floor=6)
# a time is never folded: a column that has no room for one is left out
NEXT = Column("next_run_at", _next, floor=len("2026-01-01T00:00:00Z"))
LAST = Column("last_run_at", _last, floor=len("2026-01-01T00:00:00Z"))


def schedules_view(schedules: Sequence[JsonObject]) -> View:
    wide = (
        NAME,
        CRON,
        Column("timezone", lambda s: cell(s.get("timezone"))),
        TARGET,
        Column("enabled", lambda s: cell("yes" if s.get("enabled", True) else "no")),
        NEXT,
        LAST,
        Column("last_job_id", lambda s: cell(s.get("last_job_id"))),
        Column("last_error", lambda s: cell(s.get("last_error"), "red"), ellipsis=True),
    )
    # the zone and the last fire's job and error: --wide, 'schedules show' and a pipe
    return (Sheet("schedules", (NAME, CRON, TARGET, NEXT, LAST), wide, schedules),)


def schedule_fields(schedule: JsonObject) -> Fields:
    order = ("name", "cron", "timezone", "target")
    rows: list[tuple[str, Cell]] = [(k, cell(schedule.get(k))) for k in order]
    rows += [
        # the payload as each job delivers it
        ("payload", Text(json.dumps(schedule.get("payload"), ensure_ascii=False))),
        ("headers", cell(schedule.get("headers"))),
        ("enabled", cell(schedule.get("enabled"))),
        ("next_run_at", _next(schedule)),
        ("last_run_at", _last(schedule)),
        ("last_job_id", cell(schedule.get("last_job_id"))),
        ("last_error", cell(schedule.get("last_error"), "red")),
        ("created_at", cell(schedule.get("created_at"))),
        ("updated_at", cell(schedule.get("updated_at"))),
    ]
    return Fields(f"schedule {schedule.get('name')}", rows)


def schedules_list(api: Api, args: argparse.Namespace, output: Output) -> int:
    schedules = api.schedules()
    output.result(schedules, lambda: schedules_view(schedules))
    return 0


def schedules_show(api: Api, args: argparse.Namespace, output: Output) -> int:
    schedule = api.schedule(args.name)
    output.result(schedule, lambda: (schedule_fields(schedule),))
    return 0


#: ``schedules put`` flags and the body fields they set
SCHEDULE_FLAGS = ("cron", "timezone", "target")


def schedule_body(args: argparse.Namespace, stdin: Callable[[], str]) -> JsonObject:
    """The ``PUT /schedules/{name}`` body: the file's fields, then the flags over them."""
    body: JsonObject = read_fields(args.file, stdin, "schedule") if args.file else {}
    for field in SCHEDULE_FLAGS:
        value = getattr(args, field)
        if value is not None:
            body[field] = value
    if args.payload is not None:
        body["payload"] = args.payload
    body.setdefault("payload", None)
    if args.headers:
        headers = body.get("headers")
        body["headers"] = {**(headers if isinstance(headers, dict) else {}), **dict(args.headers)}
    if args.disabled:
        body["enabled"] = False
    missing = [f"--{field}" for field in ("cron", "target") if field not in body]
    if missing:
        raise UsageError(f"give the schedule's {' and '.join(missing)}, or --file FILE")
    return body


def schedules_put(api: Api, args: argparse.Namespace, output: Output) -> int:
    body = schedule_body(args, sys.stdin.read)
    schedule, created = api.put_schedule(args.name, body)

    def view() -> View:
        verb = "created" if created else "replaced"
        headline = Text(f"{verb} schedule {schedule.get('name')}", style="bold")
        return (headline, schedule_fields(schedule))

    output.result(schedule, view)
    return 0


def schedules_delete(api: Api, args: argparse.Namespace, output: Output) -> int:
    api.delete_schedule(args.name)
    output.result({"deleted": args.name}, lambda: (Text(f"deleted schedule {args.name}"),))
    return 0


ACTIONS: dict[str, Action] = {
    "schedules_list": schedules_list,
    "schedules_show": schedules_show,
    "schedules_put": schedules_put,
    "schedules_delete": schedules_delete,
}
