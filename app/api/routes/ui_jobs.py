"""``/ui/jobs``: finding jobs, and retrying every job a filter matches.

The job list (``GET /ui/jobs``) takes the filters of ``GET /jobs``, checked by
the same ``JobQuery`` (a time without an offset is read as UTC, the time the
dashboard shows), and pages newest first. An admin may retry every job a
filter matches, as each job's caller, once a confirmation page has said how
many: the form carries that count and the newest matching id, and the press
retries no more, and none newer (at most ``BULK_MAX`` a press; the next press
continues below the oldest this one took, as the list's cursor). One job's
page, and what is done to one job or target, are ``ui_job.py``.

Forms are POSTed and answered with a redirect back to the page they came from,
with a flash that says what happened. No CSRF token: the session cookie is
SameSite=Strict, so a form posted from another site arrives without it and
``AuthGuard`` refuses it (401); a form from another origin is refused for its
origin (403), with keys or without.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field, ValidationError
from starlette.responses import Response

from app.api.auth import UI_PATH
from app.api.cursors import decode_cursor, encode_cursor
from app.api.deps import GatewayDep, get_viewer
from app.api.holds import holds
from app.api.pages import flashed, form, href, page, page_clock, redirect
from app.api.present import job_json, rfc3339
from app.api.routes.jobs import JobQuery, filter_of
from app.core.errors import Conflict, CsjdError, NotFound
from app.core.job import RETRIABLE, FailureReason, JobRecord, JobState
from app.gateway import Gateway
from app.storage.base import JobFilter

router = APIRouter(prefix=UI_PATH, include_in_schema=False)

JOBS_PATH = f"{UI_PATH}/jobs"
RETRY_ALL_PATH = f"{JOBS_PATH}/retry-all"
#: jobs on one page of the list, unless ``limit`` says otherwise (at most ``MAX_JOBS_PAGE``)
JOBS_PAGE = 50
MAX_JOBS_PAGE = 500
#: the most jobs one "retry all matching" retries; the rest wait for the next press
BULK_MAX = 10_000
#: jobs read at a time while a bulk retry collects what it will retry
COLLECT_PAGE = 1000
#: the dispatcher is woken after this many retries of a bulk retry, not only at its end
WAKE_EVERY = 200
#: how many earlier pages the list remembers for its "newer" link
TRAIL_MAX = 40
#: a trail's mark for the first page, which has no cursor (a cursor is 48 characters)
FIRST_PAGE = "0"

FILTERS = tuple(JobQuery.model_fields)
LABELS = {
    "state": "State",
    "target": "Target",
    "caller": "Caller",
    "reason": "Failure reason",
    "created_after": "Created after",
    "created_before": "Created before",
    "ordering_key": "Ordering key",
    "limit": "Jobs per page",
    "cursor": "Page",
    "trail": "Page",
}
_TIMES = ("created_after", "created_before")
#: what a datetime-local field sends, or a person writes: a time with no offset
_BARE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2})(:\d{2}(?:\.\d+)?)?$")
_NOT_A_TIME = "not a time; write it as 2026-01-01T00:00:00Z (or 2026-01-01 00:00, in UTC)"


class ListQuery(JobQuery):
    """One page of the job list: ``GET /jobs``'s filter, and where the page starts."""

    limit: int = Field(JOBS_PAGE, ge=1, le=MAX_JOBS_PAGE)
    cursor: str | None = Field(None, max_length=128)
    #: the cursors of the pages before this one, oldest first, joined by "."
    trail: str | None = Field(None, max_length=TRAIL_MAX * 49)


@dataclass(slots=True)
class Reading:
    """A form of filters as read: what it asked for, what it means, what is wrong with it."""

    #: the fields given, as the form shows them again (an empty field is no filter)
    given: dict[str, str]
    query: ListQuery | None = None
    where: JobFilter = field(default_factory=JobFilter)
    before_id: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def filters(self) -> dict[str, str]:
        """The filter alone, without the page: what links to other pages carry."""
        return {name: value for name, value in self.given.items() if name in FILTERS}

    @property
    def bulk(self) -> bool:
        """Whether every job the filter matches may be retried at once: only
        finished jobs (a failure reason names failed ones)."""
        where = self.where
        return not self.problems and (
            where.state in RETRIABLE or (where.state is None and where.reason is not None)
        )


def _given(fields: Mapping[str, str]) -> dict[str, str]:
    given: dict[str, str] = {}
    for name in ListQuery.model_fields:
        value = fields.get(name, "").strip()
        if not value:
            continue
        if name in _TIMES and (bare := _BARE_TIME.match(value)):
            value = f"{bare[1]}T{bare[2]}{bare[3] or ':00'}Z"
        given[name] = value
    return given


async def _read(request: Request, fields: Mapping[str, str]) -> Reading:
    """The filter (and page) ``fields`` ask for, checked as ``GET /jobs`` checks its query."""
    reading = Reading(_given(fields))
    try:
        reading.query = query = ListQuery.model_validate(reading.given)
    except ValidationError as exc:
        reading.problems = [_problem(e) for e in exc.errors()]
        return reading
    try:
        reading.where = filter_of(query, await get_viewer(request))
        reading.before_id = decode_cursor(query.cursor) if query.cursor else None
    except CsjdError as exc:
        # a time that matches the pattern but is none, or a cursor not given out here
        errors = exc.extensions.get("errors") or [{"loc": ["query", "cursor"], "msg": exc.detail}]
        reading.problems = [_problem({**e, "loc": e["loc"][1:]}) for e in errors]
    return reading


def _problem(error: Mapping[str, Any]) -> str:
    name = str(error["loc"][0]) if error.get("loc") else ""
    message = str(error.get("msg", "invalid"))
    if name in _TIMES and error.get("type") == "string_pattern_mismatch":
        message = _NOT_A_TIME
    return f"{LABELS.get(name, name)}: {message}"


def _describe(where: JobFilter) -> str:
    """The filter in words, for the confirmation page."""
    words = [f"{where.state.value} jobs" if where.state else "jobs"]
    if where.reason is not None:
        words.append(f"that failed with {where.reason.value}")
    if where.target is not None:
        words.append(f"of the target {where.target}")
    if where.caller is not None:
        words.append(f"of the caller {where.caller}")
    if where.ordering_key is not None:
        words.append(f"with the ordering key {where.ordering_key}")
    if where.created_after is not None:
        words.append(f"created at or after {_utc(where.created_after)}")
    if where.created_before is not None:
        words.append(f"created before {_utc(where.created_before)}")
    return " ".join(words)


def _utc(ts: float) -> str:
    return str(rfc3339(ts))


# -- the job list ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Paging:
    """The links of a page of the list: to newer jobs, older ones, and the newest."""

    newer: str | None
    older: str | None
    newest: str | None


def _paging(reading: Reading, shown: list[JobRecord], more: bool) -> Paging:
    query = reading.query
    assert query is not None
    base = dict(reading.filters)
    if query.limit != JOBS_PAGE:
        base["limit"] = str(query.limit)
    trail = query.trail.split(".") if query.trail else []
    here = query.cursor or FIRST_PAGE
    older = None
    if more and shown:
        kept = [*trail, here][-TRAIL_MAX:]
        older = href(
            JOBS_PATH, {**base, "cursor": encode_cursor(shown[-1].id), "trail": ".".join(kept)}
        )
    newer = None
    if trail:
        previous, earlier = trail[-1], trail[:-1]
        params = dict(base)
        if previous != FIRST_PAGE:
            params["cursor"] = previous
        if earlier:
            params["trail"] = ".".join(earlier)
        newer = href(JOBS_PATH, params)
    newest = href(JOBS_PATH, base) if query.cursor else None
    return Paging(newer=newer, older=older, newest=newest)


def _list_context(gateway: Gateway) -> dict[str, Any]:
    return {
        "states": [s.value for s in JobState],
        "reasons": [r.value for r in FailureReason],
        "callers": sorted(gateway.keyring.names),
        **page_clock(gateway.clock.now()),
    }


@router.get("/jobs")
async def job_list(request: Request, gateway: GatewayDep) -> Response:
    reading = await _read(request, request.query_params)
    targets = [t.name for t in await gateway.store.list_targets()]
    context = {**_list_context(gateway), "reading": reading, "targets": targets}
    if reading.problems:
        return flashed(request, "jobs.html", 400, jobs=[], paging=None, **context)
    assert reading.query is not None
    limit = reading.query.limit
    found = await gateway.store.list_jobs(
        reading.where, limit=limit + 1, before_id=reading.before_id
    )
    shown, more = found[:limit], len(found) > limit
    held = await holds(gateway, shown)
    jobs = [job_json(job, hold) for job, hold in zip(shown, held, strict=True)]
    retry_all = None
    if reading.bulk:
        # from a later page, every job from that page on: where the next press continues
        retry_all = href(RETRY_ALL_PATH, {**reading.filters, **_cursor(reading)})
    return flashed(
        request,
        "jobs.html",
        jobs=jobs,
        paging=_paging(reading, shown, more),
        retry_all=retry_all,
        retry_all_from_here=reading.before_id is not None,
        **context,
    )


# -- retrying every job a filter matches ---------------------------------------------------


def _verb(where: JobFilter) -> str:
    return "Send again" if where.state is JobState.SUCCEEDED else "Retry"


def _cursor(reading: Reading) -> dict[str, str]:
    """The list's cursor, when it has one: below which a bulk retry starts."""
    query = reading.query
    return {"cursor": query.cursor} if query is not None and query.cursor else {}


@router.get("/jobs/retry-all")
async def confirm_retry_all(request: Request, gateway: GatewayDep) -> Response:
    reading = await _read(request, request.query_params)
    back = href(JOBS_PATH, {**reading.filters, **_cursor(reading)})
    if not reading.bulk:
        problems = reading.problems or [
            "Retry all matching takes a filter on failed, cancelled or succeeded jobs "
            "(state, or a failure reason)."
        ]
        return page(
            request, "problem.html", 400, title="Nothing to retry", problems=problems, back=back
        )
    # The newest job matching now bounds what the press may retry: one that
    # matches only later (a new failure) is newer, and is left out.
    newest = await gateway.store.list_jobs(reading.where, limit=1, before_id=reading.before_id)
    count = 0
    fields = {**reading.filters, **_cursor(reading)}
    if newest:
        upto = newest[0].id
        count = await gateway.store.count_jobs(replace(reading.where, upto_id=upto))
        fields |= {"upto": upto, "count": str(min(count, BULK_MAX))}
    described = _describe(reading.where)
    if reading.before_id is not None:
        described += f" older than job {reading.before_id}"
    return page(
        request,
        "retry_all.html",
        count=count,
        bulk_max=BULK_MAX,
        described=described,
        fields=fields,
        verb=_verb(reading.where),
        back=back,
    )


def _just_below(job_id: str) -> str:
    """The id just below ``job_id``: ids are canonical UUIDs, of one length, whose
    order as text is their order as numbers, so "below" is "at or below" this one."""
    return str(uuid.UUID(int=uuid.UUID(job_id).int - 1))


@dataclass(frozen=True, slots=True)
class Confirmed:
    """What a confirmation page showed: how many jobs, the newest of them."""

    count: int
    upto: str

    @classmethod
    def of(cls, fields: Mapping[str, str], start: str | None) -> Confirmed | None:
        """The confirmation a form carries, below ``start`` (the list's cursor, if it
        had one); None if it carries none, or a damaged one."""
        count, upto = fields.get("count", ""), fields.get("upto", "")
        if not (count.isascii() and count.isdigit() and 1 <= int(count) <= BULK_MAX):
            return None
        if not all(_is_id(job_id) for job_id in (upto, start or upto)):
            return None
        return cls(count=int(count), upto=upto)


def _is_id(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


@dataclass(slots=True)
class BulkRetry:
    """What a bulk retry did: retried, skipped (changed or gone since they were
    collected), and why it stopped early, if it did."""

    collected: int
    retried: int = 0
    skipped: int = 0
    stopped: str | None = None

    def summary(self, where: JobFilter, confirmed: int, newer: int, more: bool) -> str:
        """In words, against what was confirmed: how many of those still matched,
        and how many match now that were newer than the confirmation (not retried)."""
        again = where.state is JobState.SUCCEEDED
        done = "Sent again" if again else "Retried"
        text = f"{done} {self.retried}"
        if self.collected == confirmed and not newer:
            text += f" {'job' if self.retried == 1 else 'jobs'}"
        else:
            text += f" of the {confirmed} confirmed"
        if self.collected < confirmed:
            text += f"; {confirmed - self.collected} no longer matched"
        if self.skipped:
            text += f"; skipped {self.skipped} that had changed since"
        if newer:
            state = where.state.value if where.state is not None else "failed"
            text += f"; {newer} more {state} since, not {'sent again' if again else 'retried'}"
        if self.stopped is not None:
            left = self.collected - self.retried - self.skipped
            text += f"; stopped ({self.stopped}) with {left} not tried"
        elif more:
            text += (
                ". Older jobs match too: the list now starts at them, "
                "and pressing again continues with them"
            )
        return text + "."


async def _collect(gateway: Gateway, where: JobFilter, limit: int) -> tuple[list[JobRecord], bool]:
    """The newest ``limit`` jobs ``where`` matches, read before any is changed (a
    retried job leaves the filter, and must not shift the pages still to read);
    and whether older ones match too."""
    found: list[JobRecord] = []
    before = None
    while len(found) < limit:
        want = min(COLLECT_PAGE, limit - len(found))
        batch = await gateway.store.list_jobs(where, limit=want, before_id=before)
        found.extend(batch)
        if len(batch) < want:
            return found, False
        before = batch[-1].id
    more = bool(await gateway.store.list_jobs(where, limit=1, before_id=before))
    return found, more


async def _retry_each(gateway: Gateway, jobs: list[JobRecord]) -> BulkRetry:
    result = BulkRetry(collected=len(jobs))
    for job in jobs:
        try:
            await gateway.store.retry(job.caller, job.id, gateway.clock.now())
        except (Conflict, NotFound):
            result.skipped += 1  # finished again, retried by someone else, or purged
            continue
        except CsjdError as exc:  # the backlog is full, the database is gone: the rest would be too
            result.stopped = exc.detail
            break
        result.retried += 1
        if result.retried % WAKE_EVERY == 0:
            gateway.wake()
    gateway.wake()
    return result


@router.post("/jobs/retry-all")
async def retry_all(request: Request, gateway: GatewayDep) -> Response:
    fields = await form(request)
    reading = await _read(request, {name: fields.get(name, "") for name in (*FILTERS, "cursor")})
    back = href(JOBS_PATH, reading.filters)
    if not reading.bulk:
        why = "; ".join(reading.problems) or "the filter must name finished jobs"
        return redirect(request, back, ("error", f"Nothing was retried: {why}."))
    confirmed = Confirmed.of(fields, reading.before_id)
    if confirmed is None:
        why = "the form did not carry the confirmed count; open Retry all matching again"
        return redirect(request, back, ("error", f"Nothing was retried: {why}."))
    where = reading.where
    jobs, more = await _collect(gateway, replace(where, upto_id=confirmed.upto), confirmed.count)
    # newer than what was confirmed, yet below where the press started (a press that
    # continues leaves the newer jobs, which an earlier press took, out of its account)
    start = reading.before_id
    since = replace(where, above_id=confirmed.upto, upto_id=start and _just_below(start))
    newer = await gateway.store.count_jobs(since)
    result = await _retry_each(gateway, jobs)
    said = result.summary(where, confirmed.count, newer, more)
    if result.stopped is not None:
        return redirect(request, back, ("error", said))
    if more:
        # a retried job keeps its id and may match again: the next press starts below these
        back = href(JOBS_PATH, {**reading.filters, "cursor": encode_cursor(jobs[-1].id)})
    return redirect(request, back, ("ok", said))
