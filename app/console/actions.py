"""Running one operator command: arguments in, API calls, output and exit code out.

``run`` resolves the gateway's address and token (flags first, then the
environment it is handed), opens an ``Api``, calls the command's function and
turns ``ConsoleError`` into a message on stderr and its exit code. Results go
to stdout: on a terminal as tables fitted to its width (``views.render``);
otherwise as tab-separated lines (``views.plain``); with ``--json`` as one
JSON document. Progress and errors go to stderr, so a script piping stdout
sees only the answer; progress is drawn only on a terminal, and erased once
done.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Mapping
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

from app.console import views
from app.console.client import (
    Api,
    ApiError,
    ConsoleError,
    JsonObject,
    Problem,
    Unreachable,
    UsageError,
)
from app.console.parser import DEFAULT_URL, option

#: ``GET /jobs`` answers at most this many a page
MAX_PAGE = 500
#: the shell's convention for a command stopped by Ctrl-C
INTERRUPTED = 130


class Output:
    """Where results, progress and messages go, and in which form."""

    def __init__(self, *, as_json: bool, wide: bool = False) -> None:
        self.as_json = as_json
        self.wide = wide
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def result(self, document: Any, view: Callable[[], views.View]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        elif self.out.is_terminal:
            renderable, needed = views.render(view(), self.out.width, wide=self.wide)
            # --wide lets a table be wider than the terminal rather than cut it
            self.out.width = max(self.out.width, needed)
            self.out.print(renderable)
        else:
            text, notes = views.plain(view())
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


Action = Callable[[Api, argparse.Namespace, Output], int]


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    url = option(args, "url") or environ.get("CSJD_URL") or DEFAULT_URL
    token = option(args, "token") or environ.get("CSJD_TOKEN") or None
    output = Output(as_json=bool(option(args, "json")), wide=bool(option(args, "wide")))
    try:
        with Api(url, token) as api:
            return ACTIONS[args.action](api, args, output)
    except ApiError as exc:
        _report_problem(exc.problem, token_sent=bool(token))
        return exc.exit_code
    except ConsoleError as exc:
        print(f"csjd: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("csjd: interrupted", file=sys.stderr)
        return INTERRUPTED


def _report_problem(problem: Problem, *, token_sent: bool, prefix: str = "csjd: ") -> None:
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
            "the key in CSJD_TOKEN may not do this; managing targets needs an admin key "
            "(csjd keys new NAME --role admin)"
        )
    if status == 405:
        return "this gateway is older than this csjd and does not offer this command"
    return None


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
    body: JsonObject = _read_target_file(args.file, stdin) if args.file else {}
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


def _read_target_file(name: str, stdin: Callable[[], str]) -> JsonObject:
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
        raise UsageError(f"{where} must hold one target, as a mapping of its fields")
    return body


def targets_put(api: Api, args: argparse.Namespace, output: Output) -> int:
    body = target_body(args, sys.stdin.read)
    target, created = api.put_target(args.name, body)

    def view() -> views.View:
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


# -- jobs ------------------------------------------------------------------------------


def _pages(
    api: Api, *, state: str | None, target: str | None, limit: int
) -> Iterator[list[JsonObject]]:
    cursor: str | None = None
    while True:
        page = api.jobs_page(state=state, target=target, limit=limit, cursor=cursor)
        items = page.get("items")
        yield items if isinstance(items, list) else []
        cursor = page.get("next_cursor")
        if not cursor:
            return


def _every_job(
    api: Api, output: Output, *, state: str | None, target: str | None, limit: int
) -> list[JsonObject]:
    jobs: list[JsonObject] = []
    with output.progress(total=False) as progress:
        task = progress.add_task("fetching jobs: 0", total=None)
        for items in _pages(api, state=state, target=target, limit=limit):
            jobs.extend(items)
            progress.update(task, description=f"fetching jobs: {len(jobs)}")
    return jobs


def jobs_list(api: Api, args: argparse.Namespace, output: Output) -> int:
    if args.all:
        limit = args.limit or MAX_PAGE
        jobs = _every_job(api, output, state=args.state, target=args.target, limit=limit)
        output.result({"items": jobs, "next_cursor": None}, lambda: views.jobs_view(jobs))
        return 0
    page = api.jobs_page(state=args.state, target=args.target, limit=args.limit)
    items = page.get("items") or []
    more = "more jobs: --all fetches every page, --limit N shows more"
    output.result(
        page, lambda: views.jobs_view(items, caption=more if page.get("next_cursor") else "")
    )
    return 0


def jobs_show(api: Api, args: argparse.Namespace, output: Output) -> int:
    job = api.job(args.job_id)
    output.result(job, lambda: views.job_view(job))
    return 0


def jobs_attempts(api: Api, args: argparse.Namespace, output: Output) -> int:
    attempts = api.attempts(args.job_id)
    output.result(attempts, lambda: views.attempts_view(args.job_id, attempts))
    return 0


def jobs_cancel(api: Api, args: argparse.Namespace, output: Output) -> int:
    job = api.cancel(args.job_id)
    output.result(job, lambda: views.job_view(job))
    return 0


def jobs_retry(api: Api, args: argparse.Namespace, output: Output) -> int:
    if args.failed == bool(args.job_ids):
        raise UsageError("give job ids to retry, or --failed for every failed job")
    if args.target and not args.failed:
        raise UsageError("--target goes with --failed")
    if args.failed:
        jobs = _every_job(api, output, state="failed", target=args.target, limit=MAX_PAGE)
        ids = [str(job["id"]) for job in jobs]
    else:
        ids = list(dict.fromkeys(args.job_ids))
    retried: list[JsonObject] = []
    errors: list[tuple[str, Problem]] = []
    # (message, exit code) when the loop ends early; the summary says what was done
    stopped: tuple[str, int] | None = None
    with output.progress(total=True) as progress:
        task = progress.add_task("retrying jobs", total=len(ids))
        for job_id in ids:
            try:
                retried.append(api.retry(job_id))
            except ApiError as exc:
                errors.append((job_id, exc.problem))
            except Unreachable as exc:
                # every later call would fail the same way
                stopped = (str(exc), exc.exit_code)
                break
            except KeyboardInterrupt:
                stopped = ("interrupted", INTERRUPTED)
                break
            progress.advance(task)
    output.result(
        {
            "retried": retried,
            "errors": [{"id": job_id, **problem.as_json()} for job_id, problem in errors],
            "not_tried": ids[len(retried) + len(errors) :],
        },
        lambda: (Text(_retry_summary(len(ids), len(retried), len(errors), bool(args.failed))),),
    )
    for job_id, problem in errors:
        _report_problem(problem, token_sent=api.token_sent, prefix=f"{job_id}: ")
    if stopped is not None:
        print(f"csjd: {stopped[0]}", file=sys.stderr)
        return stopped[1]
    return 1 if errors else 0


def _retry_summary(asked: int, retried: int, failed: int, every_failed: bool) -> str:
    if asked == 0:
        return "no failed jobs to retry" if every_failed else "no jobs to retry"
    plural = "" if asked == 1 else "s"
    summary = f"retried {retried} of {asked} job{plural}"
    if failed:
        summary += f"; {failed} could not be retried (see below)"
    if retried + failed < asked:
        summary += f"; {asked - retried - failed} not tried"
    return summary


# -- status ----------------------------------------------------------------------------


#: ``csjd status`` counts a producer's jobs in each state up to this many
OWN_JOBS_COUNTED = 1000


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
    and how many of its own jobs are in each state."""
    counts: dict[str, int] = {}
    more: list[str] = []
    for state in views.OWN_JOB_STATES:
        counts[state], cursor = 0, None
        while True:
            page = api.jobs_page(
                state=state, limit=min(MAX_PAGE, OWN_JOBS_COUNTED - counts[state]), cursor=cursor
            )
            items = page.get("items")
            counts[state] += len(items) if isinstance(items, list) else 0
            cursor = page.get("next_cursor")
            if not cursor:
                break
            if counts[state] >= OWN_JOBS_COUNTED:
                more.append(state)
                break
    document = {
        "url": api.base_url,
        "ready": ready,
        "readyz": readyz,
        "jobs": counts,
        "jobs_counted_up_to": OWN_JOBS_COUNTED,
        "jobs_more": more,
        "targets": None,
        "note": "targets and breakers need an admin key",
    }
    output.result(document, lambda: views.own_jobs_view(api.base_url, ready, readyz, counts, more))
    return 0 if ready else 1


ACTIONS: dict[str, Action] = {
    "targets_list": targets_list,
    "targets_show": targets_show,
    "targets_put": targets_put,
    "targets_enable": targets_enable,
    "targets_disable": targets_disable,
    "targets_delete": targets_delete,
    "jobs_list": jobs_list,
    "jobs_show": jobs_show,
    "jobs_attempts": jobs_attempts,
    "jobs_cancel": jobs_cancel,
    "jobs_retry": jobs_retry,
    "status": status,
}
