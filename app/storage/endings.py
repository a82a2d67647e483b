"""What follows a job's ending, in the transaction that ends it: lines and callbacks.

Every write that makes jobs terminal (an attempt's result, a cancel, an
expiry, a rescue) hands the jobs it ended to ``_ended`` before it commits:
the next job of each ordering line a finished head led takes the lead
(``ordering.py``), and each job with a ``callback_target`` enqueues its
callback through intake's own path (``app/core/callback.py``), stored in the
same commit as the ending. A callback refused (its target deleted, which a
delete refuses while jobs would call it back) is logged; the ending stands.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import bindparam, select, update

from app.core.callback import callback_for
from app.core.job import Enqueued
from app.storage import ordering
from app.storage.group import Tx
from app.storage.intake import Intake
from app.storage.models import jobs
from app.storage.records import job_record

log = logging.getLogger("csjd.storage")

_ROWS = select(jobs).where(jobs.c.id.in_(bindparam("ids", expanding=True)))
_CALLED_BACK = (
    update(jobs)
    .where(jobs.c.id == bindparam("job_id"))
    .values(callback_job_id=bindparam("callback_id"), callbacks=jobs.c.callbacks + 1)
)


class Ended(NamedTuple):
    """A job a write just made terminal, with what its ending sets off."""

    target: str
    ordering_key: str | None
    id: str
    callback_target: str | None


class Endings(Intake):
    """The store's writes that end jobs call ``_ended`` with them."""

    async def _ended(self, tx: Tx, ended: Sequence[Ended], now: float) -> None:
        keyed = [(e.target, e.ordering_key, e.id) for e in ended if e.ordering_key is not None]
        changed: list[str] = []
        if keyed:
            changed += await ordering.move_on(tx.conn, self._lines, keyed, self._tally(tx), now)
        calling = sorted(e.id for e in ended if e.callback_target is not None)
        if calling:
            changed += await self._call_back(tx, calling, now)
        if changed:
            tx.after_commit.append(lambda: self.on_change(changed))

    async def _call_back(self, tx: Tx, job_ids: list[str], now: float) -> list[str]:
        rows = (await tx.conn.execute(_ROWS, {"ids": job_ids})).mappings().all()
        finished = [job_record(row) for row in rows]
        calls = [
            callback_for(job, row["callbacks"] + 1, now)
            for job, row in zip(finished, rows, strict=True)
        ]
        answers = await self._enqueue_batch(tx, calls)
        made: list[dict[str, str]] = []
        for job, answer in zip(finished, answers, strict=True):
            if isinstance(answer, Enqueued):
                made.append({"job_id": job.id, "callback_id": answer.job.id})
            else:
                log.warning(
                    "callback_refused",
                    extra={
                        "job_id": job.id,
                        "callback_target": job.callback_target,
                        "error": type(answer).__name__,
                    },
                )
        if made:
            await tx.conn.execute(_CALLED_BACK, made)
        return [m["callback_id"] for m in made]
