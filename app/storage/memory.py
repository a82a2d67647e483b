"""``MemoryJobStore``: the ``JobStore`` held in this process's memory.

It keeps targets, jobs, attempts and duty leases in dicts (schedules in
``memory_schedules.py``) and answers every call as ``SqlJobStore`` does on
SQLite, where one process alone writes the database: the same records,
refusals, compare-and-set guards on a job's state and lease, and
``on_change`` announcements (``tests/storage/test_store_contract.py`` holds
all three to one contract). It is a fake for fast tests of what sits above
the seam, not a backend to run: nothing is durable or shared with another
process, and no group commit batches, retries or loses an answer. A call
reads and writes without suspending, so it is atomic on the event loop as a
transaction is in the database. Time comes only from the arguments, except
``database_time``: this host's clock, as on SQLite.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from app.core import errors, ordering
from app.core.attempt import AttemptRecord, Completion, rescued
from app.core.callback import callback_for
from app.core.job import (
    ACTIVE,
    RETRIABLE,
    TERMINAL,
    WAITING,
    Enqueued,
    IllegalTransition,
    JobRecord,
    JobState,
    NewJob,
    admit,
)
from app.core.retry import Random
from app.core.schedule import ScheduleRecord
from app.core.target import TargetRecord, effects, with_effects
from app.storage import memory_writes as writes
from app.storage.base import (
    ATTEMPTS_PAGE,
    ClaimRequest,
    ClaimRound,
    JobFilter,
    JobStore,
    no_one_listens,
)
from app.storage.counts import Tally
from app.storage.memory_lines import Lines
from app.storage.memory_schedules import MemorySchedules
from app.storage.memory_targets import MemoryTargets

#: the states a job expires in: those where it waits for its next attempt
_EXPIRABLE = ACTIVE - {JobState.RUNNING}


def _matches(job: JobRecord, f: JobFilter) -> bool:
    return (
        (f.caller is None or job.caller == f.caller)
        and (f.state is None or job.state is f.state)
        and (f.target is None or job.target == f.target)
        and (f.reason is None or job.failure_reason is f.reason)
        and (f.created_after is None or job.created_at >= f.created_after)
        and (f.created_before is None or job.created_at < f.created_before)
        and (f.above_id is None or job.id > f.above_id)
        and (f.upto_id is None or job.id <= f.upto_id)
        and (f.ordering_key is None or job.ordering_key == f.ordering_key)
    )


def _due(job: JobRecord) -> tuple[float, str]:
    """Claim order: the longest due first (ties, which SQL leaves open, by id)."""
    return job.next_attempt_at or 0.0, job.id


class MemoryJobStore(MemoryTargets, MemorySchedules):
    def __init__(self, *, max_backlog: int) -> None:
        #: told, after each change, which jobs changed state (None: some, unknown which)
        self.on_change: Callable[[Iterable[str] | None], None] = no_one_listens
        self._max_backlog = max_backlog
        self._targets: dict[str, TargetRecord] = {}
        self._jobs: dict[str, JobRecord] = {}
        #: (caller, idempotency key) -> (job id, the request's fingerprint)
        self._keys: dict[tuple[str, str], tuple[str, str]] = {}
        self._attempts: dict[str, list[AttemptRecord]] = {}
        #: duty -> (holder, until)
        self._leaders: dict[str, tuple[str, float]] = {}
        self._schedules: dict[str, ScheduleRecord] = {}
        self._active = 0
        #: the per-target counts, kept by ``_save`` as SqlJobStore's writes keep them
        self._counts = Tally()
        #: the ordering lines, told of every job that joins or leaves one
        self._lines = Lines()
        #: a job with a callback_target -> how many of its endings called back
        self._callbacks: dict[str, int] = {}

    @property
    def shared(self) -> bool:
        """No other process sees this store."""
        return False

    @property
    def active(self) -> int:
        """Non-terminal jobs (always exact here)."""
        return self._active

    async def recount(self) -> int:
        return self._active

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def database_time(self) -> float:
        """This host's clock, as ``SqlJobStore`` answers on SQLite."""
        return time.time()

    # -- intake ------------------------------------------------------------

    async def enqueue(self, job: NewJob) -> Enqueued:
        return self._enqueue(job)

    def _enqueue(self, job: NewJob) -> Enqueued:
        stored = self._keys.get((job.caller, job.idempotency_key))
        if stored is not None:
            # a key already stored wins over any refusal: a producer sending a
            # stored job again always hears of it
            job_id, fingerprint = stored
            if job_id == job.id:
                # this very request again (to SqlJobStore, a batch run again after
                # its commit's answer was lost): answered as when it was made
                return Enqueued(job=self._jobs[job_id], replayed=False)
            if fingerprint != job.fingerprint:
                raise errors.IdempotencyKeyReused(
                    f"Idempotency-Key '{job.idempotency_key}' was used for a different "
                    f"request (job {job_id})",
                    extensions={"job_id": job_id},
                )
            return Enqueued(job=self._jobs[job_id], replayed=True)
        if job.refusal is not None:
            raise job.refusal
        target = self._targets.get(job.target)
        if target is None:
            raise errors.UnknownTarget(
                f"no target named '{job.target}'", extensions={"target": job.target}
            )
        if job.callback_target is not None and job.callback_target not in self._targets:
            raise errors.UnknownTarget(
                f"no target named '{job.callback_target}' (callback_target)",
                extensions={"target": job.callback_target},
            )
        # an ending is never refused its callback: the job it follows took the room
        if job.callback_of is None and self._active + 1 > self._max_backlog:
            raise errors.BacklogFull.at(self._max_backlog)
        if job.id in self._jobs:  # the primary key, on SQL
            raise errors.RefusedByDatabase("the database refused to store this request's values")
        self._keys[(job.caller, job.idempotency_key)] = (job.id, job.fingerprint)
        return Enqueued(job=self._save(admit(job, target.spec)), replayed=False)

    async def enqueue_many(self, batch: list[NewJob]) -> list[Enqueued | errors.CsjdError]:
        # nothing here suspends: the whole batch is one step, as one commit is
        results: list[Enqueued | errors.CsjdError] = []
        for job in batch:
            try:
                results.append(await self.enqueue(job))
            except errors.CsjdError as exc:
                results.append(exc)
        return results

    # -- reads -------------------------------------------------------------

    async def get_job(self, caller: str | None, job_id: str) -> JobRecord | None:
        """The caller's job; ``caller=None`` finds anyone's."""
        return self._job(caller, job_id)

    async def list_jobs(
        self, filter: JobFilter, *, limit: int, before_id: str | None
    ) -> list[JobRecord]:
        """Newest first (by id)."""
        found = (
            job
            for job in self._jobs.values()
            if _matches(job, filter) and (before_id is None or job.id < before_id)
        )
        return heapq.nlargest(limit, found, key=lambda job: job.id)

    async def count_jobs(self, filter: JobFilter) -> int:
        return sum(_matches(job, filter) for job in self._jobs.values())

    async def list_attempts(
        self, caller: str | None, job_id: str, *, after: int = 0, limit: int = ATTEMPTS_PAGE
    ) -> list[AttemptRecord] | None:
        if self._job(caller, job_id) is None:
            return None
        # by number, then in the order written (as the attempts' ids run on SQL)
        found = [a for a in self._attempts.get(job_id, ()) if a.delivery > after]
        return sorted(found, key=lambda a: a.delivery)[:limit]

    async def job_versions(self, job_ids: list[str]) -> dict[str, tuple[str, float]]:
        """(state, updated_at) of each of these jobs that exists."""
        return {
            job.id: (job.state.value, job.updated_at)
            for job in map(self._jobs.get, job_ids)
            if job is not None
        }

    async def count_by_state(
        self, states: Collection[JobState] = tuple(JobState)
    ) -> dict[JobState, int]:
        counts = dict.fromkeys(states, 0)
        for job in self._jobs.values():
            if job.state in counts:
                counts[job.state] += 1
        return counts

    async def next_due(self) -> float | None:
        waiting = (job.next_attempt_at for job in self._jobs.values() if job.state in WAITING)
        return min((t for t in waiting if t is not None), default=None)

    # -- operator commands -------------------------------------------------

    async def cancel(self, caller: str | None, job_id: str, now: float) -> JobRecord:
        job = self._job(caller, job_id)
        if job is None:
            raise errors.NotFound(f"no job '{job_id}'")
        if job.state in ACTIVE:
            job = self._save(writes.finished(job, JobState.CANCELLED, now))
        elif job.state is not JobState.CANCELLED or job.completed_at != now:
            # (a job cancelled at ``now`` is this very cancel again, which SqlJobStore
            # meets after a commit in doubt: it answers the job)
            raise IllegalTransition.of(job.state, "cancelled")
        self.on_change((job_id,))
        return job

    async def retry(self, caller: str | None, job_id: str, now: float) -> JobRecord:
        # SqlJobStore's order: the target and the backlog come before the state
        job = self._job(caller, job_id)
        if job is None:
            raise errors.NotFound(f"no job '{job_id}'")
        if job.target not in self._targets:
            raise errors.Conflict(f"the job's target '{job.target}' no longer exists")
        if self._active + 1 > self._max_backlog:
            raise errors.BacklogFull.at(self._max_backlog)
        if job.state not in RETRIABLE:
            raise IllegalTransition.of(job.state, "retried")
        job = self._save(writes.retried(job, now))
        self.on_change((job_id,))
        return job

    # -- dispatch ----------------------------------------------------------

    async def claim_round(
        self, requests: Sequence[ClaimRequest], now: float, lease_s: Mapping[str, float]
    ) -> ClaimRound:
        jobs = await self.claim(requests, now, lease_s)
        return ClaimRound(jobs=jobs, next_due=await self.next_due())

    async def claim(
        self, requests: Sequence[ClaimRequest], now: float, lease_s: Mapping[str, float]
    ) -> list[JobRecord]:
        due = [
            job
            for job in self._jobs.values()
            if job.state in WAITING
            and job.next_attempt_at is not None
            and job.next_attempt_at <= now
        ]
        promoted = [
            self._save(replace(job, state=JobState.QUEUED, updated_at=now))
            for job in sorted(due, key=_due)
        ]
        claimed: list[JobRecord] = []
        for request in sorted(requests, key=lambda r: r.target):
            if request.limit <= 0:
                continue
            queued = sorted(
                (
                    job
                    for job in self._jobs.values()
                    if job.state is JobState.QUEUED and job.target == request.target
                ),
                key=_due,
            )
            # first attempts and retries apart: retries over the bound hold no first back
            retries = request.limit if request.retries is None else max(request.retries, 0)
            firsts = [job for job in queued if job.delivery == 0][: request.limit]
            again = [job for job in queued if job.delivery > 0][:retries]
            until = now + lease_s[request.target]
            claimed += [
                self._save(writes.claimed(job, now, until))
                for job in sorted(firsts + again, key=_due)[: request.limit]
            ]
        claimed.sort(key=_due)
        if promoted or claimed:
            self.on_change([*(job.id for job in promoted), *(job.id for job in claimed)])
        return claimed

    async def complete(self, completion: Completion) -> bool:
        written = self._complete(completion)
        if written:
            self.on_change((completion.job_id,))
        return written

    async def extend_leases(self, leases: Mapping[str, int], until: float) -> int:
        """Push out the leases of attempts still running (guarded by their tokens)."""
        extended = 0
        for job_id, lease in leases.items():
            job = self._jobs.get(job_id)
            if job is not None and job.delivery == lease and job.lease_expires_at is not None:
                self._jobs[job_id] = replace(job, lease_expires_at=until)
                extended += 1
        return extended

    async def try_lead(self, duty: str, holder: str, now: float, ttl_s: float) -> bool:
        """Take or keep the lease on ``duty``; True while ``holder`` leads it."""
        held = self._leaders.get(duty)
        if held is not None and held[0] != holder and held[1] >= now:
            return False
        self._leaders[duty] = (holder, now + ttl_s)
        return True

    async def resign(self, duty: str, holder: str) -> None:
        """Give up ``duty`` if ``holder`` leads it, before its lease ends."""
        if self._leaders.get(duty, ("", 0.0))[0] == holder:
            del self._leaders[duty]

    async def fail_expired(self, now: float) -> int:
        expired = [
            job for job in self._jobs.values() if job.state in _EXPIRABLE and job.expires_at <= now
        ]
        for job in expired:
            self._save(writes.expired(job, now))
        if expired:
            self.on_change(None)
        return len(expired)

    async def rescue(
        self, now: float, rng: Random, *, expired_only: bool = False, grace_s: float = 0.0
    ) -> int:
        """Bring back attempts whose worker is gone (counted, ``interrupted``): every
        leased job, or with ``expired_only`` those whose lease ran out more than
        ``grace_s`` ago."""
        before = now - grace_s if expired_only else math.inf
        stale = [
            job
            for job in self._jobs.values()
            if job.lease_expires_at is not None
            and job.lease_expires_at < before
            and job.state in (JobState.RUNNING, JobState.CANCELLED)
        ]
        lapsed_before = before if expired_only else None
        count = 0
        for job in stale:
            target = self._targets.get(job.target)
            spec = target.spec if target else None
            count += self._complete(rescued(job, spec, now, rng, lapsed_before=lapsed_before))
        if count:
            self.on_change(None)
        return count

    async def repair_lines(self, now: float) -> int:
        """Every write here moves its lines on: none is ever stranded."""
        return 0

    async def purge(self, completed_before: float) -> int:
        old = [
            job
            for job in self._jobs.values()
            if job.completed_at is not None
            and job.completed_at < completed_before
            and job.state in TERMINAL
        ]
        for job in old:
            del self._jobs[job.id]
            self._attempts.pop(job.id, None)
            del self._keys[(job.caller, job.idempotency_key)]  # the key is free again
        return len(old)

    # -- helpers -----------------------------------------------------------

    def _job(self, caller: str | None, job_id: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        if job is None or (caller is not None and job.caller != caller):
            return None
        return job

    def _unfinished(self) -> Iterable[JobRecord]:
        return (job for job in self._jobs.values() if job.state in ACTIVE)

    def _save(self, job: JobRecord) -> JobRecord:
        before = self._jobs.get(job.id)
        was_active = before is not None and before.state in ACTIVE
        if job.ordering_key is not None and not was_active and job.state in ACTIVE:
            job = self._lines.join(job)
        self._active += (job.state in ACTIVE) - was_active
        self._jobs[job.id] = job
        if before is None:
            self._counts.accepted(job.target, job.state, job.created_at)
        else:
            at = job.updated_at if job.completed_at is None else job.completed_at
            self._counts.moved(job.target, before.state, job.state, at)
        if was_active and job.state in TERMINAL:
            if job.ordering_key is not None and (leads := self._lines.leave(job)):
                nxt, not_before = leads
                self._save(ordering.released(self._jobs[nxt], not_before, job.updated_at))
            if job.callback_target is not None:
                job = self._call_back(job)
        return job

    def _call_back(self, job: JobRecord) -> JobRecord:
        """``job`` just ended: its callback, enqueued in the same step."""
        n = self._callbacks.get(job.id, 0) + 1
        try:
            made = self._enqueue(callback_for(job, n, job.updated_at))
        except errors.CsjdError:
            return job  # (its target was deleted: SqlJobStore logs it)
        self._callbacks[job.id] = n
        job = self._jobs[job.id] = replace(job, callback_job_id=made.job.id)
        return job

    def _complete(self, c: Completion) -> bool:
        """Write an attempt's result if its lease still holds; a stale one changes nothing."""
        job = self._jobs.get(c.job_id)
        written = None if job is None else writes.completed(job, c)
        if written is None:
            return False
        self._save(written)
        if c.attempt is not None:
            self._attempts.setdefault(c.job_id, []).append(writes.stored(c.attempt))
        target = self._targets.get(c.target)
        change = effects(c.decision, c.attempt.status_code if c.attempt else None)
        if target is not None and change is not None:
            self._targets[c.target] = with_effects(target, change, c.now)
        return True


if TYPE_CHECKING:
    _: type[JobStore] = MemoryJobStore  # mypy holds it to the protocol
