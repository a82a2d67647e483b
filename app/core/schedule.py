"""Schedules: a cron expression in a time zone that makes a job at each of its fire times.

``Cron`` reads an expression (five fields, or six with seconds first, or one
of ``@hourly`` … ``@yearly``) in an IANA time zone, through cronsim, which
treats daylight-saving changes as Debian's cron does: a job at a time of day
that a change skips runs once, right after the gap; one at a time it repeats
runs once, the first time. ``ScheduleSpec`` is what an operator puts;
``ScheduleRecord`` what csjd keeps of it, with its next and last fire.

``plan`` is the one decision of firing: for a schedule that is due at ``now``
it takes the latest fire time at or before ``now`` (missed fire times collapse
into that one: none is replayed), the job that fire makes (idempotency key
``schedule:<name>:<fire time>``, caller ``schedule:<name>``), or why it makes
none (its target is gone or disabled), and the next fire time after ``now``.
The store writes a ``Fire`` only over the schedule as it was read. No I/O
here, and time is an argument: tests state "at 02:30 on the night the clocks
go forward" without waiting for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from cronsim import CronSim, CronSimError

from app.core import idempotency
from app.core.answer import storable
from app.core.errors import CsjdError, Unprocessable
from app.core.ids import uuid7
from app.core.job import Enqueued, JobRecord, NewJob
from app.core.target import TargetRecord

#: jobs a schedule makes belong to this caller, followed by its name
CALLER_PREFIX = "schedule:"
MAX_CRON_CHARS = 255
MAX_TIMEZONE_CHARS = 64
#: the longest ``last_error`` kept (its column's width)
MAX_ERROR_CHARS = 1024
#: the nicknames cron accepts for the commonest schedules
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: steps a search for the next (or latest) fire time takes past times a
#: daylight-saving change makes ambiguous before it gives up
_STEPS = 4


class InvalidSchedule(ValueError):
    """A cron expression or time zone that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression in a time zone: its fire times, in epoch seconds."""

    expression: str
    zone: ZoneInfo

    @classmethod
    def parse(cls, expression: str, timezone: str) -> Cron:
        """The schedule, or ``InvalidSchedule`` naming what is wrong with it."""
        zone = parse_zone(timezone)
        text = " ".join(expression.split())
        text = ALIASES.get(text.lower(), text)
        if len(text) > MAX_CRON_CHARS:
            raise InvalidSchedule(f"a cron expression has at most {MAX_CRON_CHARS} characters")
        if text.startswith("@"):
            raise InvalidSchedule(f"unknown nickname '{text}' (use one of {', '.join(ALIASES)})")
        try:
            CronSim(text, datetime(2000, 1, 1, tzinfo=zone))
        except CronSimError as exc:
            raise InvalidSchedule(_why(text, str(exc))) from None
        cron = cls(text, zone)
        if cron.next_after(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) is None:
            raise InvalidSchedule(f"'{text}' matches no time within 50 years")
        return cron

    def next_after(self, t: float) -> float | None:
        """The first fire time after ``t`` (None: none within 50 years of it)."""
        start = datetime.fromtimestamp(int(t // 1), self.zone)
        it = CronSim(self.expression, start)
        for _ in range(_STEPS):
            try:
                found = next(it).timestamp()
            except StopIteration:
                return None
            # Debian's rules move a time a change skipped to after the gap, which
            # can land before ``start`` when it falls in a repeated hour
            if found > t:
                return found
        return None

    def latest_at_or_before(self, t: float) -> float | None:
        """The last fire time at or before ``t`` (None: none within 50 years of it)."""
        # reversed iteration steps back one second first: start a second later
        start = datetime.fromtimestamp(int(t // 1) + 1, self.zone)
        it = CronSim(self.expression, start, reverse=True)
        for _ in range(_STEPS):
            try:
                found = next(it).timestamp()
            except StopIteration:
                return None
            if found <= t:
                return found
        return None


def parse_zone(name: str) -> ZoneInfo:
    if not name or len(name) > MAX_TIMEZONE_CHARS:
        raise InvalidSchedule("name an IANA time zone, such as 'UTC' or 'Europe/Paris'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones
        raise InvalidSchedule(
            f"unknown time zone '{name}' (an IANA name, such as 'UTC' or 'Europe/Paris')"
        ) from None


def _why(expression: str, error: str) -> str:
    fields = len(expression.split())
    if error == "Wrong number of fields":
        return (
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            f"or 6 with seconds first; '{expression}' has {fields}"
        )
    return f"'{expression}' is not a valid cron expression: {error.lower()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleSpec:
    """A schedule as an operator puts it."""

    name: str
    cron: str
    timezone: str = "UTC"
    target: str
    #: the compact JSON each job delivers
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True

    @property
    def caller(self) -> str:
        return CALLER_PREFIX + self.name


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleRecord:
    spec: ScheduleSpec
    #: when it fires next (None while it is disabled)
    next_run_at: float | None
    #: the last fire time it came to, whether or not that made a job
    last_run_at: float | None
    #: the job its last fire made (None: it made none)
    last_job_id: str | None
    #: why its last fire made no job (None: it made one)
    last_error: str | None
    created_at: float
    #: when its spec was last put: what a fire is written over
    updated_at: float

    @property
    def name(self) -> str:
        return self.spec.name


def first_run(spec: ScheduleSpec, now: float) -> float | None:
    """When a schedule put at ``now`` fires first: its next fire time after ``now``
    (a fire time at ``now`` itself has passed), or None while it is disabled."""
    if not spec.enabled:
        return None
    return Cron.parse(spec.cron, spec.timezone).next_after(now)


def fire_time(fire_at: float) -> str:
    """A fire time as RFC 3339 UTC, to the second: ``2026-01-01T08:00:00Z``."""
    return datetime.fromtimestamp(fire_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fire_key(name: str, fire_at: float) -> str:
    """``schedule:<name>:<fire time, RFC 3339 UTC>``: one job per fire time, whoever fires."""
    return f"{CALLER_PREFIX}{name}:{fire_time(fire_at)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fire:
    """One fire of a schedule, to be written over the schedule as it was read."""

    name: str
    #: the schedule's ``next_run_at`` and ``updated_at`` as read: the write's guard
    seen_next_run_at: float
    seen_updated_at: float
    fire_at: float
    #: the fire time after this one (None: the expression has no more)
    next_run_at: float | None
    #: the job to store; its ``refusal`` says why this fire may make none
    job: NewJob


def plan(record: ScheduleRecord, target: TargetRecord | None, now: float) -> Fire | None:
    """The fire a schedule makes at ``now``, or None when it is not due. A fire whose
    target is gone (None) or disabled makes no job: it is skipped, and the schedule
    goes on to its next fire time."""
    due = record.next_run_at
    if due is None or due > now or not record.spec.enabled:
        return None
    spec = record.spec
    cron = Cron.parse(spec.cron, spec.timezone)
    # the latest fire time that has passed: those missed before it are not replayed
    fire_at = max(due, cron.latest_at_or_before(now) or due)
    refusal = None
    if target is None:
        refusal = Unprocessable(f"the target '{spec.target}' does not exist")
    elif not target.spec.enabled:
        refusal = Unprocessable(f"the target '{spec.target}' is disabled")
    return Fire(
        name=spec.name,
        seen_next_run_at=due,
        seen_updated_at=record.updated_at,
        fire_at=fire_at,
        next_run_at=cron.next_after(max(fire_at, now)),
        job=NewJob(
            id=uuid7(int(now * 1000)),
            caller=spec.caller,
            idempotency_key=fire_key(spec.name, fire_at),
            fingerprint=idempotency.fingerprint(
                spec.target, {"payload": orjson.loads(spec.payload), "headers": dict(spec.headers)}
            ),
            target=spec.target,
            payload=spec.payload,
            headers=dict(spec.headers) or None,
            max_attempts=None,
            next_attempt_at=now,
            expires_at=None,
            created_at=now,
            refusal=refusal,
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Fired:
    """What a fire did once written: the job it made (or found already made by this
    fire, ``replayed``), or why it made none."""

    fire: Fire
    job: JobRecord | None
    replayed: bool = False
    refusal: CsjdError | None = None

    @property
    def last_error(self) -> str | None:
        """What the schedule shows of a fire that made no job."""
        if self.refusal is None:
            return None
        return storable(f"skipped: {self.refusal.detail}", MAX_ERROR_CHARS)


def fired(fire: Fire, answer: Enqueued | CsjdError) -> Fired:
    """The fire's outcome from intake's answer to its job."""
    if isinstance(answer, CsjdError):
        return Fired(fire=fire, job=None, refusal=answer)
    return Fired(fire=fire, job=answer.job, replayed=answer.replayed)
