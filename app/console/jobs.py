"""The operator's job commands: list, count, show, attempts, cancel, and retry.

A list follows ``GET /jobs``' pages (``--all`` every page, with progress on
stderr). A retry of every job matching a filter (``jobs retry --failed`` or
``--state``) counts the matches and asks before it acts, on a terminal;
elsewhere it needs ``--yes``. It collects the ids first, retries each with a
progress bar, never more than it counted, stops at the first 401, 403, 429 or
503, and sums up what was retried, had already changed (409) or was gone (404).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Iterator

from rich.text import Text

from app.console import views
from app.console.client import Api, ApiError, JsonObject, Problem, Unreachable, UsageError
from app.console.output import INTERRUPTED, Output, report_problem
from app.console.parser import job_filters

#: ``GET /jobs`` answers at most this many a page
MAX_PAGE = 500
#: the jobs a dry run of a bulk retry shows
DRY_RUN_SHOWN = 10


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
        report_problem(problem, token_sent=api.token_sent, prefix=f"{job_id}: ")
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


ACTIONS: dict[str, Callable[[Api, argparse.Namespace, Output], int]] = {
    "jobs_list": jobs_list,
    "jobs_count": jobs_count,
    "jobs_show": jobs_show,
    "jobs_attempts": jobs_attempts,
    "jobs_cancel": jobs_cancel,
    "jobs_retry": jobs_retry,
}
