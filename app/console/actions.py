"""Running one operator command: arguments in, API calls, output and exit code out.

``run`` resolves the gateway's address and token (flags first, then the
environment it is handed), opens an ``Api``, calls the command's function and
turns ``ConsoleError`` into a message on stderr and its exit code. Results go
to stdout (``output.py``): on a terminal as tables fitted to its width;
otherwise as tab-separated lines; with ``--json`` as one JSON document.
Progress and errors go to stderr, so a script piping stdout sees only the
answer; progress is drawn only on a terminal, and erased once done. The jobs'
commands are in ``jobs.py``, the schedules' in ``schedules.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping

from rich.text import Text

from app.console import jobs, schedules, sheets, views
from app.console.client import (
    Api,
    ApiError,
    ConsoleError,
    JsonObject,
    UsageError,
)
from app.console.output import INTERRUPTED, Output, read_fields, report_problem
from app.console.parser import DEFAULT_URL, option

Action = Callable[[Api, argparse.Namespace, Output], int]


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    url = option(args, "url") or environ.get("CSJD_URL") or DEFAULT_URL
    token = option(args, "token") or environ.get("CSJD_TOKEN") or None
    output = Output(as_json=bool(option(args, "json")), wide=bool(option(args, "wide")))
    try:
        with Api(url, token) as api:
            return ACTIONS[args.action](api, args, output)
    except ApiError as exc:
        report_problem(exc.problem, token_sent=bool(token))
        return exc.exit_code
    except ConsoleError as exc:
        print(f"csjd: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("csjd: interrupted", file=sys.stderr)
        return INTERRUPTED


# -- targets ---------------------------------------------------------------------------


def targets_list(api: Api, args: argparse.Namespace, output: Output) -> int:
    targets = api.targets()
    output.result(targets, lambda: views.targets_view(targets))
    return 0


def targets_show(api: Api, args: argparse.Namespace, output: Output) -> int:
    target = api.target(args.name)
    output.result(target, lambda: views.target_view(target))
    return 0


#: ``targets put`` flags and the body fields they set
TARGET_FLAGS = (
    ("target_url", "url"),
    ("timeout_s", "timeout_s"),
    ("max_concurrency", "max_concurrency"),
    ("rate_limit_per_s", "rate_limit_per_s"),
    ("max_attempts", "max_attempts"),
    ("backoff_initial_s", "backoff_initial_s"),
    ("backoff_max_s", "backoff_max_s"),
    ("max_retry_duration_s", "max_retry_duration_s"),
    ("secret", "secret"),
)


def target_body(args: argparse.Namespace, stdin: Callable[[], str]) -> JsonObject:
    """The ``PUT /targets/{name}`` body: the file's fields, then the flags over them."""
    body: JsonObject = read_fields(args.file, stdin, "target") if args.file else {}
    for flag, field in TARGET_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            body[field] = value
    if args.headers:
        headers = body.get("headers")
        body["headers"] = {**(headers if isinstance(headers, dict) else {}), **dict(args.headers)}
    if args.disabled:
        body["enabled"] = False
    if "url" not in body:
        raise UsageError("give the target's --url URL, or --file FILE holding its fields")
    return body


def targets_put(api: Api, args: argparse.Namespace, output: Output) -> int:
    body = target_body(args, sys.stdin.read)
    target, created = api.put_target(args.name, body)

    def view() -> sheets.View:
        verb = "created" if created else "replaced"
        headline = Text(f"{verb} target {target.get('name')}", style="bold")
        return (headline, views.target_fields(target))

    output.result(target, view)
    return 0


def _switch(api: Api, args: argparse.Namespace, output: Output, *, enabled: bool) -> int:
    target = api.patch_target(args.name, {"enabled": enabled})
    line = f"target {args.name} {'enabled' if enabled else 'disabled'}"
    output.result(target, lambda: (Text(line),))
    return 0


def targets_enable(api: Api, args: argparse.Namespace, output: Output) -> int:
    return _switch(api, args, output, enabled=True)


def targets_disable(api: Api, args: argparse.Namespace, output: Output) -> int:
    return _switch(api, args, output, enabled=False)


def targets_delete(api: Api, args: argparse.Namespace, output: Output) -> int:
    api.delete_target(args.name)
    output.result({"deleted": args.name}, lambda: (Text(f"deleted target {args.name}"),))
    return 0


# -- status ----------------------------------------------------------------------------


def status(api: Api, args: argparse.Namespace, output: Output) -> int:
    ready, readyz = api.readyz()
    try:
        targets = api.targets()
    except ApiError as exc:
        if exc.problem.status != 403:
            raise
        return _own_status(api, output, ready, readyz)
    document = {
        "url": api.base_url,
        "ready": ready,
        "readyz": readyz,
        "backlog": views.backlog_total(targets),
        "targets": targets,
    }
    output.result(document, lambda: views.status_view(api.base_url, ready, readyz, targets))
    return 0 if ready else 1


def _own_status(api: Api, output: Output, ready: bool, readyz: JsonObject) -> int:
    """What a key that may not read targets (a producer's) may see: readiness
    and how many of its own jobs are in each state (``GET /jobs/count``, exact)."""
    counts = {state: api.jobs_count(state=state) for state in views.OWN_JOB_STATES}
    document = {
        "url": api.base_url,
        "ready": ready,
        "readyz": readyz,
        "jobs": counts,
        "targets": None,
        "note": "targets and breakers need an admin key",
    }
    output.result(document, lambda: views.own_jobs_view(api.base_url, ready, readyz, counts))
    return 0 if ready else 1


ACTIONS: dict[str, Action] = {
    "targets_list": targets_list,
    "targets_show": targets_show,
    "targets_put": targets_put,
    "targets_enable": targets_enable,
    "targets_disable": targets_disable,
    "targets_delete": targets_delete,
    **schedules.ACTIONS,
    **jobs.ACTIONS,
    "status": status,
}
