"""Delivery: claiming due jobs, writing their attempts' results, and keeping them moving.

The dispatcher claims (``claim``), renews leases (``extend_leases``) and
completes attempts (``complete``, batched by the ``GroupCommitter``); the
elected maintenance leader (``try_lead``) fails expired jobs, rescues
attempts whose worker is gone and purges finished jobs past retention.
Every write to a running job is compare-and-set on its delivery number (the
lease token), so a stale worker's write changes nothing. Where replicas
write at once, the rows one is writing are skipped by the others, never
waited for (the dialect's lock clause, ``statements.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from itertools import chain

from sqlalchemy import update

from app.core.attempt import Completion, rescued
from app.core.job import ACTIVE, JobRecord, JobState
from app.core.retry import Random
from app.core.target import Effects, effects
from app.storage import ordering, statements, values
from app.storage.base import ClaimRequest, ClaimRound
from app.storage.endings import Ended, Endings
from app.storage.engine import Conn
from app.storage.group import Tx
from app.storage.models import targets
from app.storage.records import attempt_row, completion_params, job_record
from app.storage.statements import PURGE_BATCH


class Delivery(Endings):
    """The ``JobStore``'s dispatch and maintenance operations."""

    async def claim(
        self, requests: Sequence[ClaimRequest], now: float, lease_s: Mapping[str, float]
    ) -> list[JobRecord]:
        return (await self.claim_round(requests, now, lease_s)).jobs

    async def claim_round(
        self, requests: Sequence[ClaimRequest], now: float, lease_s: Mapping[str, float]
    ) -> ClaimRound:
        runs = 0

        async def op(tx: Tx) -> tuple[list[JobRecord], list[str], float | None]:
            nonlocal runs
            runs += 1
            if runs > 1:
                # Run again after an error: if that was a commit cut off after the
                # server made it, these jobs are already this claim's (claimed_at is
                # this call's own reading of the clock), and nobody else will start them.
                earlier = (
                    (await tx.conn.execute(statements.CLAIMED_AT, {"now": now})).mappings().all()
                )
                if earlier:
                    return [job_record(row) for row in earlier], [], await next_due_in(tx.conn)
            tally = self._tally(tx)
            promoted: list[str] = []
            promote = self._statements.promote
            for job_id, target, was in await tx.conn.execute(promote, {"now": now}):
                promoted.append(job_id)
                tally.moved(target, JobState(was), JobState.QUEUED, now)
            claimed: list[JobRecord] = []
            for request in sorted(requests, key=lambda r: r.target):
                limit = await self._dialect.claim_room(tx.conn, request.target, request.limit)
                if limit <= 0:
                    continue
                rows = (
                    await tx.conn.execute(
                        self._statements.claim,
                        {
                            "now": now,
                            "target": request.target,
                            "limit": limit,
                            "retries": limit if request.retries is None else request.retries,
                            "lease_expires_at": now + lease_s[request.target],
                        },
                    )
                ).mappings()
                taken = [job_record(row) for row in rows]
                tally.moved(request.target, JobState.QUEUED, JobState.RUNNING, now, len(taken))
                claimed.extend(taken)
            claimed.sort(key=lambda job: (job.next_attempt_at or 0.0, job.id))
            return claimed, promoted, await next_due_in(tx.conn)

        claimed, promoted, next_due = await self._writer.run(op)
        if promoted or claimed:
            self.on_change(chain(promoted, (job.id for job in claimed)))
        return ClaimRound(jobs=claimed, next_due=next_due)

    async def complete(self, completion: Completion) -> bool:
        written: bool = await self._writer.run_batched(self._complete_batch, completion)
        if written:
            self.on_change((completion.job_id,))
        return written

    async def _complete_batch(self, tx: Tx, batch: list[Completion]) -> list[bool]:
        """Write many attempts' results in a few statements; stale ones change nothing."""
        params = [completion_params(c) for c in batch]
        #: the jobs written -> (their ordering key, their callback target)
        matched: dict[str, tuple[str | None, str | None]] = {}
        for start in range(0, len(batch), values.CHUNK):
            chunk = params[start : start + values.CHUNK]
            sql = values.complete_running(self._dialect, len(chunk))
            args = tuple(p[f] for p in chunk for f in values.COMPLETE_FIELDS)
            for row in (await tx.conn.exec_driver_sql(sql, args)).all():
                matched[row[0]] = (row[1], row[2])
        written: list[bool] = []
        finished = 0
        tally = self._tally(tx)
        for c, p in zip(batch, params, strict=True):
            if c.job_id in matched:
                written.append(True)
                finished += c.decision.state not in ACTIVE
                tally.moved(c.target, JobState.RUNNING, c.decision.state, c.now)
            else:
                # rare: cancelled while the attempt ran (recorded, stays cancelled), or stale
                written.append(
                    bool((await tx.conn.execute(statements.COMPLETE_CANCELLED, p)).rowcount)
                )
        self._adjust_active(tx, -finished)
        ended: list[Ended] = []
        for c in batch:
            key, callback = matched.get(c.job_id, (None, None))
            if (key or callback) and c.decision.state not in ACTIVE:
                ended.append(Ended(c.target, key, c.job_id, callback))
        if ended:
            await self._ended(tx, ended, batch[0].now)
        rows = [attempt_row(c) for c, ok in zip(batch, written, strict=True) if ok and c.attempt]
        if rows:
            await tx.conn.exec_driver_sql(values.insert_attempts(self._dialect), rows)
        for c, ok in zip(batch, written, strict=True):
            change = effects(c.decision, c.attempt.status_code if c.attempt else None)
            if ok and change is not None:
                # target rows last, in name order: see group.py on lock order
                tx.at_end(c.target, partial(_write_target_effects, c.target, change, c.now))
        return written

    async def extend_leases(self, leases: Mapping[str, int], until: float) -> int:
        """Push out the leases of attempts still running (guarded by their tokens)."""

        async def op(tx: Tx) -> int:
            items = list(leases.items())
            extended = 0
            for start in range(0, len(items), values.CHUNK):
                chunk = items[start : start + values.CHUNK]
                sql = values.extend_leases(self._dialect, len(chunk))
                # (rowcount is -1 for a statement that starts with WITH)
                args = (*(x for pair in chunk for x in pair), until)
                extended += len((await tx.conn.exec_driver_sql(sql, args)).all())
            return extended

        return await self._writer.run(op)

    async def try_lead(self, duty: str, holder: str, now: float, ttl_s: float) -> bool:
        """Take or keep the lease on ``duty``; True while ``holder`` leads it."""

        async def op(tx: Tx) -> bool:
            row = (
                await tx.conn.execute(
                    statements.LEAD,
                    {"name": duty, "holder": holder, "until": now + ttl_s, "now": now},
                )
            ).first()
            return row is not None

        return await self._writer.run(op, alone=True)

    async def resign(self, duty: str, holder: str) -> None:
        """Give up ``duty`` if ``holder`` leads it, before its lease ends."""

        async def op(tx: Tx) -> None:
            await tx.conn.execute(statements.RESIGN, {"name": duty, "holder": holder})

        await self._writer.run(op, alone=True)

    async def fail_expired(self, now: float) -> int:
        async def op(tx: Tx) -> int:
            count = 0
            tally = self._tally(tx)
            for statement in self._statements.fail_expired:
                result = await tx.conn.execute(statement, {"now": now})
                for target, was, n in result if result.returns_rows else ():
                    tally.moved(target, JobState(was), JobState.FAILED, now, int(n))
                    count += int(n)
            self._adjust_active(tx, -count)
            if count:
                # what the endings of jobs with a line or a callback set off
                rows = await tx.conn.execute(statements.EXPIRED_NOW_FOLLOWED, {"now": now})
                await self._ended(tx, [Ended(*row) for row in rows], now)
            return count

        expired = await self._writer.run(op, alone=True)
        if expired:
            self.on_change(None)
        return expired

    async def rescue(
        self, now: float, rng: Random, *, expired_only: bool = False, grace_s: float = 0.0
    ) -> int:
        """Bring back attempts whose worker is gone (counted, ``interrupted``).

        Alone on SQLite at start, every leased job is orphaned
        (``expired_only=False``); otherwise only those whose lease ran out more
        than ``grace_s`` ago (their attempt's deadline is
        long past; the grace lets a live holder that lost the database for a
        while renew or complete first). Each write re-checks that the lease
        still lapsed, so a lease renewed meanwhile is left alone.
        """
        before = now - grace_s if expired_only else float("inf")

        async def op(tx: Tx) -> int:
            stale = self._statements.stale_running
            rows = (await tx.conn.execute(stale, {"before": before})).mappings().all()
            completions: list[Completion] = []
            for row in rows:
                job = job_record(row)
                target = await self._target_in_batch(tx, job.target)
                completions.append(
                    rescued(
                        job,
                        target.spec if target else None,
                        now,
                        rng,
                        lapsed_before=before if expired_only else None,
                    )
                )
            return sum(await self._complete_batch(tx, completions))

        count = await self._writer.run(op, alone=True)
        if count:
            self.on_change(None)
        return count

    async def repair_lines(self, now: float) -> int:
        """Move on every line whose head finished without it moving on (none should);
        answers how many did."""

        async def op(tx: Tx) -> int:
            stranded = await ordering.stranded(tx.conn)
            if stranded:
                await ordering.move_on(tx.conn, self._lines, stranded, self._tally(tx), now)
            return len(stranded)

        repaired = await self._writer.run(op, alone=True)
        if repaired:
            self.on_change(None)
        return repaired

    async def purge(self, completed_before: float) -> int:
        async def op(tx: Tx) -> int:
            params = {"before": completed_before, "limit": PURGE_BATCH}
            await tx.conn.execute(self._statements.purge_attempts, params)
            purge_jobs = self._statements.purge_jobs
            return int((await tx.conn.execute(purge_jobs, params)).rowcount)

        total = 0
        while (count := await self._writer.run(op, alone=True)) > 0:
            total += count
            if count < PURGE_BATCH:
                break
        return total


async def _write_target_effects(target: str, change: Effects, now: float, conn: Conn) -> None:
    if change.pause_until is not None:
        await conn.execute(statements.PAUSE_TARGET, {"until": change.pause_until, "name": target})
    if change.disabled_reason is not None:
        await conn.execute(
            update(targets)
            .where(targets.c.name == target)
            .values(enabled=False, disabled_reason=change.disabled_reason, updated_at=now)
        )


async def next_due_in(conn: Conn) -> float | None:
    """When the first waiting job (scheduled, or a retry) comes due, if any does."""
    value = (await conn.execute(statements.NEXT_DUE)).scalar_one_or_none()
    return None if value is None else float(value)
