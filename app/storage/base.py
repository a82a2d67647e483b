"""The storage seam: the ``JobStore`` protocol, which every consumer is typed against.

The store hands out and takes the core's records (``app.core.job``,
``app.core.target``, ``app.core.attempt``), frozen dataclasses, never ORM
objects, so nothing above storage can lazily touch the database. Every state
change behind this protocol is a compare-and-set on the row's current state
(and, for a running delivery, on its delivery number, the lease token), so a
stale or concurrent writer changes nothing. The store decides nothing: what a
job becomes comes from the core, and the store writes it. Every failure it
raises is the core's (``app.core.errors``): a database out of reach is
``DatabaseUnavailable``, a value it refuses ``RefusedByDatabase`` or
``BadRequest``; no driver error leaves a store.

Three backends implement it: ``memory.py`` (in-process, for tests) and the
SQL store over SQLite and Postgres; ``tests/storage`` runs one contract suite
over all three.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.core.attempt import AttemptRecord, Completion
from app.core.errors import CsjdError
from app.core.job import Enqueued, FailureReason, JobRecord, JobState, NewJob
from app.core.retry import Random
from app.core.schedule import Fire, Fired, ScheduleRecord, ScheduleSpec
from app.core.target import TargetRecord, TargetSpec

#: attempts in one page of ``list_attempts`` unless the caller asks for fewer
ATTEMPTS_PAGE = 100
#: the most attempts one page may hold
MAX_ATTEMPTS_PAGE = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRequest:
    """Up to ``limit`` of a target's due jobs, the longest due first."""

    target: str
    limit: int
    #: of which at most this many retries (jobs already sent: ``deliveries > 0``),
    #: so a claim takes only what the retry budget lets start; None: no bound.
    #: First attempts are never held back by retries left waiting.
    retries: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRound:
    """What one claim took, and when the next waiting job comes due after it
    (``next_due`` read in the same transaction: the claim loop sleeps on it)."""

    jobs: list[JobRecord]
    next_due: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Activity:
    """How many of a target's jobs were accepted, and finished succeeded or failed,
    in one minute (a job finished again after a retry counts again)."""

    target: str
    #: the minute's start, in epoch seconds
    minute: int
    accepted: int
    succeeded: int
    failed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilter:
    """Which jobs ``list_jobs`` and ``count_jobs`` take; None leaves a field open."""

    #: the caller whose jobs these are; None: every caller's
    caller: str | None = None
    state: JobState | None = None
    target: str | None = None
    #: only failed jobs carry one, so naming it names ``failed`` jobs
    reason: FailureReason | None = None
    #: created at or after this time (epoch seconds)
    created_after: float | None = None
    #: created before this time (epoch seconds)
    created_before: float | None = None
    #: ids above this one only (newer jobs: ids are time-ordered)
    above_id: str | None = None
    #: ids at or below this one only
    upto_id: str | None = None
    ordering_key: str | None = None


def no_one_listens(job_ids: Iterable[str] | None) -> None:
    """A store's ``on_change`` until someone listens."""


class JobStore(Protocol):
    """Durable jobs, targets and attempts, behind one seam for every backend."""

    #: told, after each commit, which jobs changed state (None: some, unknown which)
    on_change: Callable[[Iterable[str] | None], None]

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    @property
    def shared(self) -> bool:
        """Whether other processes write to this store too (counts go stale)."""
        ...

    @property
    def active(self) -> int:
        """Unfinished jobs, as this process counts them (bounds ``max_backlog``)."""
        ...

    async def recount(self) -> int: ...
    async def database_time(self) -> float:
        """The store's clock in epoch seconds (Postgres's server's; else this host's)."""
        ...

    # targets
    async def put_target(self, spec: TargetSpec, now: float) -> tuple[TargetRecord, bool]: ...
    async def replace_target(
        self, spec: TargetSpec, *, disabled_reason: str | None, seen: float, now: float
    ) -> TargetRecord | None:
        """Write an existing target's configuration only if it is still the one
        written at ``seen`` (its ``updated_at``): the record written (pause and
        ``created_at`` kept), or None when it was changed or deleted since."""
        ...

    async def get_target(self, name: str) -> TargetRecord | None: ...
    async def list_targets(self) -> list[TargetRecord]: ...
    # deleting a target forgets its counts
    async def delete_target(self, name: str) -> None: ...

    # the per-target counts (``counts.py``), kept by the writes: a row per target
    # and state, or per target and minute, never a job
    async def backlog_by_target(self) -> dict[str, dict[str, int]]: ...
    # the minutes that start from ``since`` to before ``until``
    async def activity(self, since: float, until: float) -> list[Activity]: ...
    async def repair_backlog(self) -> dict[tuple[str, str], int]:
        """Count the backlog from the jobs, and correct the kept counts: the
        corrections, by (target, state) (empty when none was off)."""
        ...

    # the minutes that start before ``before``; how many (target, minute) rows went
    async def forget_minutes(self, before: float) -> int: ...

    # intake and reads
    async def enqueue(self, job: NewJob) -> Enqueued: ...
    async def enqueue_many(self, batch: list[NewJob]) -> list[Enqueued | CsjdError]:
        """Each job admitted as ``enqueue`` would, all stored in one commit: an answer
        per job, in order, a refusal as a value (it never undoes the others)."""
        ...

    # ``caller=None`` wherever a caller is named: any caller's job (an admin's view)
    async def get_job(self, caller: str | None, job_id: str) -> JobRecord | None: ...
    # newest first (by id), below ``before_id``
    async def list_jobs(
        self, filter: JobFilter, *, limit: int, before_id: str | None
    ) -> list[JobRecord]: ...
    async def count_jobs(self, filter: JobFilter) -> int: ...
    # the attempts numbered above ``after``, in order, at most ``limit``; None: no such job
    async def list_attempts(
        self, caller: str | None, job_id: str, *, after: int = 0, limit: int = ATTEMPTS_PAGE
    ) -> list[AttemptRecord] | None: ...
    # (state, updated_at) of each of these jobs that exists: what a watch polls
    async def job_versions(self, job_ids: list[str]) -> dict[str, tuple[str, float]]: ...
    async def count_by_state(
        self, states: Collection[JobState] = tuple(JobState)
    ) -> dict[JobState, int]: ...

    # operator commands
    async def cancel(self, caller: str | None, job_id: str, now: float) -> JobRecord: ...
    # a finished job back to ``queued``, attempts reset to 0, its delivery number kept
    async def retry(self, caller: str | None, job_id: str, now: float) -> JobRecord: ...

    # dispatch
    async def claim(
        self, requests: Sequence[ClaimRequest], now: float, lease_s: Mapping[str, float]
    ) -> list[JobRecord]: ...
    async def claim_round(
        self, requests: Sequence[ClaimRequest], now: float, lease_s: Mapping[str, float]
    ) -> ClaimRound:
        """``claim``, and ``next_due`` as of its commit, in one transaction."""
        ...

    async def complete(self, completion: Completion) -> bool: ...
    # ``leases``: job id -> the delivery number of each running delivery
    async def extend_leases(self, leases: Mapping[str, int], until: float) -> int: ...
    async def try_lead(self, duty: str, holder: str, now: float, ttl_s: float) -> bool: ...
    async def resign(self, duty: str, holder: str) -> None:
        """Give up ``duty`` if ``holder`` leads it: the next to ask takes it at once."""
        ...

    async def fail_expired(self, now: float) -> int: ...
    async def rescue(
        self, now: float, rng: Random, *, expired_only: bool = False, grace_s: float = 0.0
    ) -> int: ...
    async def next_due(self) -> float | None: ...
    async def purge(self, completed_before: float) -> int: ...
    async def repair_lines(self, now: float) -> int:
        """Move on the ordering lines whose head finished unnoticed; how many did."""
        ...

    # schedules: a replaced schedule keeps ``created_at`` and what its last fire did
    async def put_schedule(
        self, spec: ScheduleSpec, next_run_at: float | None, now: float
    ) -> tuple[ScheduleRecord, bool]: ...
    async def get_schedule(self, name: str) -> ScheduleRecord | None: ...
    async def list_schedules(self) -> list[ScheduleRecord]: ...
    async def delete_schedule(self, name: str) -> None: ...
    # those due by ``now`` (``next_run_at`` passed), the longest due first
    async def due_schedules(self, now: float, *, limit: int) -> list[ScheduleRecord]: ...
    async def fire_schedule(self, fire: Fire) -> Fired | None:
        """Store the fire's job through intake (as ``enqueue`` would) and move the
        schedule on to its next fire time, in one transaction; None, writing
        nothing, when the schedule is no longer the one the fire was planned on
        (another process fired it, it was put again, or deleted)."""
        ...
