"""Intake: new jobs written a batch at a time, and replays answered from what is stored.

``Intake.enqueue`` hands each job to the ``GroupCommitter``, which runs many
callers' jobs as one batch in one transaction. The batch holds the targets it
names against a delete (the dialect's ``hold_targets``; a ``callback_target``
too), checks that each job's target exists and that the backlog has room (a
callback, ``app/core/callback.py``, takes none), and admits it by the core's
rules (``admit``). The (caller, idempotency_key) unique constraint, not a read,
decides which request made a job; the jobs it made with an ordering key then
join their lines (``ordering.py``); whatever was not created is then looked up
as a replay (which counts nothing: only the jobs this batch inserted change the
per-target counts, ``counts.py``). Refusals are returned as values, so one
caller's refusal never rolls back another's job. ``enqueue_many`` (a
``POST /jobs/batch``) hands its jobs to the committer as one unit, so they are
admitted by the same code and stored in one commit, each with its own answer.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import RowMapping, select

from app.core import errors
from app.core.job import Enqueued, JobRecord, NewJob, admit
from app.storage import ordering, values
from app.storage.engine import Conn
from app.storage.group import Tx
from app.storage.models import jobs
from app.storage.records import job_record, job_row
from app.storage.store import SqlStoreBase, raise_if_error


class Intake(SqlStoreBase):
    """The ``JobStore``'s ``enqueue`` and ``enqueue_many``."""

    async def enqueue(self, job: NewJob) -> Enqueued:
        result = await self._writer.run_batched(self._enqueue_batch, job)
        return raise_if_error(result)  # type: ignore[no-any-return]

    async def enqueue_many(self, batch: list[NewJob]) -> list[Enqueued | errors.CsjdError]:
        return await self._writer.run_many(self._enqueue_batch, batch)

    async def _enqueue_batch(
        self, tx: Tx, batch: list[NewJob]
    ) -> list[Enqueued | errors.CsjdError]:
        results: list[Enqueued | errors.CsjdError | None] = [None] * len(batch)
        rows: list[dict[str, Any]] = []
        admitted: list[JobRecord] = []
        positions: list[int] = []
        named = {job.target for job in batch}
        named.update(job.callback_target for job in batch if job.callback_target is not None)
        await self._hold_targets(tx, named)
        #: the keys of admitted jobs that take room in the backlog: a key twice in
        #: the batch takes it once, a key already stored (a replay) not at all
        taking: set[tuple[str, str]] = set()
        stored: set[tuple[str, str]] | None = None
        for i, job in enumerate(batch):
            if job.refusal is not None:
                # refused as a new job; a stored job with this key still answers
                results[i] = job.refusal
                continue
            target = await self._target_in_batch(tx, job.target)
            if target is None:
                results[i] = errors.UnknownTarget(
                    f"no target named '{job.target}'", extensions={"target": job.target}
                )
                continue
            if job.callback_target is not None and (
                await self._target_in_batch(tx, job.callback_target) is None
            ):
                results[i] = errors.UnknownTarget(
                    f"no target named '{job.callback_target}' (callback_target)",
                    extensions={"target": job.callback_target},
                )
                continue
            key = (job.caller, job.idempotency_key)
            if (
                job.callback_of is None  # an ending is never refused its callback
                and key not in taking
                and self._pending_active(tx) + len(taking) >= self._max_backlog
            ):
                if stored is None:
                    # only near the bound: which keys are replays, that need no room
                    stored = set(await self._rows_by_key(tx.conn, batch))
                    taking -= stored
                if (
                    key not in stored
                    and self._pending_active(tx) + len(taking) >= self._max_backlog
                ):
                    results[i] = errors.BacklogFull.at(self._max_backlog)
                    continue
            if stored is None or key not in stored:
                taking.add(key)
            record = admit(job, target.spec)
            admitted.append(record)
            rows.append(job_row(record, job.fingerprint))
            positions.append(i)
        inserted: set[str] = set()
        if rows:
            # Replicas insert keys in one order: two batches sharing keys wait on
            # each other's unique-index entries, never in a cycle.
            ordered = sorted(rows, key=lambda r: (r["caller"], r["idempotency_key"]))
            for start in range(0, len(ordered), values.CHUNK):
                chunk = ordered[start : start + values.CHUNK]
                sql = values.insert_jobs(self._dialect, len(chunk))
                args = tuple(row[f] for row in chunk for f in values.JOB_FIELDS)
                inserted.update(row[0] for row in (await tx.conn.exec_driver_sql(sql, args)).all())
            self._adjust_active(tx, len(inserted))
            if inserted:
                await self._dialect.notify_jobs(tx.conn)
        if inserted:
            tally = self._tally(tx)
            keyed: list[JobRecord] = []
            for record, i in zip(admitted, positions, strict=True):
                if record.id in inserted:
                    results[i] = Enqueued(job=record, replayed=False)
                    tally.accepted(record.target, record.state, record.created_at)
                    if record.ordering_key is not None:
                        keyed.append(record)
            if keyed:
                # in the order accepted: each job joins the end of its key's line
                lines = self._statements.lines
                now = keyed[0].created_at
                joined = await ordering.join(tx.conn, lines, keyed, tally, now)
                for record, i in zip(admitted, positions, strict=True):
                    if record.id in joined:
                        results[i] = Enqueued(job=joined[record.id], replayed=False)
        # Everything not created may be a replay: a key already stored wins over
        # any refusal, so a producer retrying a stored job always hears 202.
        undecided = [i for i, r in enumerate(results) if not isinstance(r, Enqueued)]
        if undecided:
            existing = await self._rows_by_key(tx.conn, [batch[i] for i in undecided])
            for i in undecided:
                job = batch[i]
                row = existing.get((job.caller, job.idempotency_key))
                if row is None:
                    # only a refusal, or a conflict with a writer not yet committed
                    results[i] = results[i] or errors.KeyInFlight(
                        "a request with this key is still being stored", retry_after_s=1
                    )
                elif row["id"] == job.id:
                    # this very request, stored by an earlier run of this batch whose
                    # commit was cut off before its answer (a dropped connection)
                    self._adjust_active(tx, 1)
                    results[i] = Enqueued(job=job_record(row), replayed=False)
                elif row["fingerprint"] != job.fingerprint:
                    results[i] = _key_reused(job, row)
                else:
                    results[i] = Enqueued(job=job_record(row), replayed=True)
        return [r for r in results if r is not None]

    async def _rows_by_key(
        self, conn: Conn, batch: list[NewJob]
    ) -> dict[tuple[str, str], RowMapping]:
        by_caller: dict[str, set[str]] = {}
        for job in batch:
            by_caller.setdefault(job.caller, set()).add(job.idempotency_key)
        found: dict[tuple[str, str], RowMapping] = {}
        for caller, keys in by_caller.items():
            rows = await conn.execute(
                select(jobs).where(jobs.c.caller == caller, jobs.c.idempotency_key.in_(keys))
            )
            for row in rows.mappings():
                found[(caller, row["idempotency_key"])] = row
        return found


def _key_reused(job: NewJob, row: RowMapping) -> errors.CsjdError:
    return errors.IdempotencyKeyReused(
        f"Idempotency-Key '{job.idempotency_key}' was used for a different request "
        f"(job {row['id']})",
        extensions={"job_id": row["id"]},
    )
