"""Running one operator command: arguments in, API calls, output and exit code out.

``run`` resolves the gateway's address and token (flags first, then the
environment it is handed), opens an ``Api``, calls the command's function and
turns ``ConsoleError`` into a message on stderr and its exit code. Results go
to stdout (``output.py``): on a terminal as tables fitted to its width;
otherwise as tab-separated lines; with ``--json`` as one JSON document.
Progress and errors go to stderr, so a script piping stdout sees only the
answer; progress is drawn only on a terminal, and erased once done. A retry
of every job matching a filter says how many match and asks before it acts,
on a terminal; elsewhere it needs ``--yes``. The schedules' commands are in
``schedules.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Iterator, Mapping

from rich.text import Text

from app.console import schedules, sheets, views
from app.console.client import (
    Api,
    ApiError,
    ConsoleError,
    JsonObject,
    Problem,
    Unreachable,
    UsageError,
)
from app.console.output import Output, read_fields
from app.console.parser import DEFAULT_URL, job_filters, option

#: ``GET /jobs`` answers at most this many a page
MAX_PAGE = 500
#: the shell's convention for a command stopped by Ctrl-C
INTERRUPTED = 130
#: the jobs a dry run of a bulk retry shows
DRY_RUN_SHOWN = 10


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
            "the key in CSJD_TOKEN may not do this; managing targets and schedules needs "
            "an admin key, and so do other callers' jobs (csjd keys new NAME --role admin)"
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


# -- jobs ------------------------------------------------------------------------------


def _pages(
    api: Api, filters: dict[str, str], *, limit: int, cursor: str | None = None
) -> Iterator[list[JsonObject]]:
    while True:
        page = api.jobs_page(limit=limit, cursor=cursor, **filters)
        items = page.get("items")
        yield items if isinstance(items, list) else []
        cursor = page.get("next_cursor")
        if not cursor:
            return


def _every_job(
    api: Api, output: Output, filters: dict[str, str], *, limit: int, cursor: str | None = None
) -> list[JsonObject]:
    jobs: list[JsonObject] = []
    with output.progress(total=False) as progress:
        task = progress.add_task("fetching jobs: 0", total=None)
        for items in _pages(api, filters, limit=limit, cursor=cursor):
            jobs.extend(items)
            progress.update(task, description=f"fetching jobs: {len(jobs)}")
    return jobs


def jobs_list(api: Api, args: argparse.Namespace, output: Output) -> int:
    filters = job_filters(args)
    if args.all:
        limit = args.limit or MAX_PAGE
        jobs = _every_job(api, output, filters, limit=limit, cursor=args.cursor)
        output.result({"items": jobs, "next_cursor": None}, lambda: views.jobs_view(jobs))
        return 0
    page = api.jobs_page(limit=args.limit, cursor=args.cursor, **filters)
    items = page.get("items") or []
    more = page.get("next_cursor")
    # on a terminal under the table; through a pipe on standard error, never among the rows
    caption = f"more jobs: add --cursor {more} for the next page, or --all for every page"
    output.result(page, lambda: views.jobs_view(items, caption=caption if more else ""))
    return 0


def jobs_count(api: Api, args: argparse.Namespace, output: Output) -> int:
    count = api.jobs_count(**job_filters(args))
    output.result({"count": count}, lambda: (Text(str(count)),))
    return 0


def jobs_show(api: Api, args: argparse.Namespace, output: Output) -> int:
    job = api.job(args.job_id)
    attempts = api.attempts(args.job_id)
    # the job as GET /jobs/{id} answers it, its attempts beside (its "attempts" is their count)
    document = {**job, "attempt_list": attempts}
    output.result(document, lambda: views.job_page(job, attempts))
    return 0


def jobs_attempts(api: Api, args: argparse.Namespace, output: Output) -> int:
    attempts = api.attempts(args.job_id)
    output.result(attempts, lambda: views.attempts_view(args.job_id, attempts))
    return 0


def jobs_cancel(api: Api, args: argparse.Namespace, output: Output) -> int:
    job = api.cancel(args.job_id)
    output.result(job, lambda: views.job_view(job))
    return 0


def _matching(count: int, filters: dict[str, str]) -> str:
    """``3 jobs match state=failed target=billing``."""
    verb = "job matches" if count == 1 else "jobs match"
    return f"{count} {verb} " + " ".join(f"{name}={value}" for name, value in filters.items())


def _bulk_ids(api: Api, args: argparse.Namespace, output: Output) -> list[str] | int:
    """The ids of every job matching the filters, once the operator has agreed to
    retry them all; or the exit code when nothing is to be retried (none match, a
    dry run, the answer was no)."""
    filters = job_filters(args)
    count = api.jobs_count(**filters)
    matching = _matching(count, filters)
    if count == 0:
        output.result(
            {"count": 0, "filter": filters}, lambda: (Text(f"{matching}: none to retry"),)
        )
        return 0
    if args.dry_run:
        first = api.jobs_page(limit=DRY_RUN_SHOWN, **filters).get("items") or []
        rest = count - len(first)
        output.result(
            {"count": count, "filter": filters, "first": first},
            lambda: (
                Text(f"{matching}; a dry run retries none"),
                *views.jobs_view(
                    first,
                    title=f"the first {len(first)}" if rest > 0 else "",
                    caption=f"and {rest} more" if rest > 0 else "",
                ),
            ),
        )
        return 0
    if not args.yes:
        if not output.can_ask:
            them = "it" if count == 1 else "them"
            raise UsageError(
                f"{matching}; nobody here to confirm (not a terminal): add --yes to retry "
                f"{them}, or --dry-run to see {them} first"
            )
        them = "it" if count == 1 else f"all {count}"
        if not output.confirm(f"{matching}. Retry {them}?"):
            print("csjd: nothing retried", file=sys.stderr)
            return 1
    else:
        output.note(matching)
    jobs = _every_job(api, output, filters, limit=MAX_PAGE)  # newest first
    if len(jobs) > count:
        # never more than was confirmed: those that matched when counted are the oldest
        output.note(
            f"{len(jobs) - count} more matched since the count; retrying the {count} "
            "counted, not the newer ones"
        )
        jobs = jobs[len(jobs) - count :]
    return [str(job["id"]) for job in jobs]


def jobs_retry(api: Api, args: argparse.Namespace, output: Output) -> int:
    filters = job_filters(args)
    bulk = "state" in filters
    if bulk == bool(args.job_ids):
        raise UsageError(
            "give job ids to retry, or --failed (or --state STATE) for every job matching"
        )
    if not bulk and (filters or args.dry_run):
        raise UsageError(
            "--target, --caller, --reason, --since, --until and --dry-run go with "
            "--failed or --state"
        )
    if bulk:
        found = _bulk_ids(api, args, output)
        if isinstance(found, int):
            return found
        ids = found
    else:
        ids = list(dict.fromkeys(args.job_ids))
    tally = _retry_each(api, output, ids, bulk=bulk)
    output.result(tally.as_json(ids), lambda: (Text(tally.summary(len(ids))),))
    for job_id, problem in tally.errors:
        _report_problem(problem, token_sent=api.token_sent, prefix=f"{job_id}: ")
    if tally.stopped is not None:
        print(f"csjd: {tally.stopped[0]}", file=sys.stderr)
        return tally.stopped[1]
    return 1 if tally.errors else 0


@dataclasses.dataclass(slots=True)
class _Tally:
    """What a run of retries came to."""

    retried: list[JsonObject] = dataclasses.field(default_factory=list)
    #: matched the filter when listed, then changed state (409, an illegal transition)
    #: or went (404): what a bulk retry expects of jobs others act on meanwhile, so
    #: not errors (a 409 for a deleted target is one)
    changed: list[str] = dataclasses.field(default_factory=list)
    gone: list[str] = dataclasses.field(default_factory=list)
    errors: list[tuple[str, Problem]] = dataclasses.field(default_factory=list)
    #: (message, exit code) when the loop ended early
    stopped: tuple[str, int] | None = None

    @property
    def done(self) -> int:
        return len(self.retried) + len(self.changed) + len(self.gone) + len(self.errors)

    def as_json(self, ids: list[str]) -> JsonObject:
        return {
            "retried": self.retried,
            "already_changed": self.changed,
            "gone": self.gone,
            "errors": [{"id": job_id, **problem.as_json()} for job_id, problem in self.errors],
            "not_tried": ids[self.done :],
        }

    def summary(self, asked: int) -> str:
        if asked == 0:
            return "no jobs to retry"
        summary = f"retried {len(self.retried)} of {asked} job{'' if asked == 1 else 's'}"
        if self.changed:
            summary += f"; {len(self.changed)} already changed (409)"
        if self.gone:
            summary += f"; {len(self.gone)} gone (404)"
        if self.errors:
            summary += f"; {len(self.errors)} could not be retried (see below)"
        if self.done < asked:
            summary += f"; {asked - self.done} not tried"
        return summary


#: refusals that are not about one job: a run of retries stops at the first
_STOPPING = frozenset({401, 403, 429, 503})


def _retry_each(api: Api, output: Output, ids: list[str], *, bulk: bool) -> _Tally:
    tally = _Tally()
    with output.progress(total=True) as progress:
        task = progress.add_task("retrying jobs", total=len(ids))
        for job_id in ids:
            try:
                tally.retried.append(api.retry(job_id))
            except ApiError as exc:
                if bulk and exc.problem.type.endswith("/illegal-transition"):
                    tally.changed.append(job_id)
                elif bulk and exc.problem.status == 404:
                    tally.gone.append(job_id)
                else:
                    tally.errors.append((job_id, exc.problem))
                    if exc.problem.status in _STOPPING:
                        # the key, the backlog or the gateway: every later call would
                        # be refused the same way
                        tally.stopped = (f"stopped: {exc.problem.title}", 1)
                        break
            except Unreachable as exc:
                # every later call would fail the same way
                tally.stopped = (str(exc), exc.exit_code)
                break
            except KeyboardInterrupt:
                tally.stopped = ("interrupted", INTERRUPTED)
                break
            progress.advance(task)
    return tally


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
    "jobs_list": jobs_list,
    "jobs_count": jobs_count,
    "jobs_show": jobs_show,
    "jobs_attempts": jobs_attempts,
    "jobs_cancel": jobs_cancel,
    "jobs_retry": jobs_retry,
    "status": status,
}
