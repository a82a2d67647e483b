"""Lines of jobs with an ordering key, kept in SQL: who leads each, who goes next.

``ordering_heads`` holds one row per line with jobs not finished (target,
ordering key): its head and the place the next job to join takes. Writers
lock that row to change the line, so on Postgres replicas take a line's turns
one at a time: ``join`` upserts it (``ON CONFLICT DO UPDATE`` locks it,
where ``DO NOTHING`` would not), and ``move_on`` locks it before it reads
who is next, so a job that joins while the head finishes is either seen or
finds the line's row gone and leads a new one. Rows are locked in (target,
key) order, and always before the per-target counts (written at the end of
the transaction), so writers never wait on each other in a cycle.

Both run inside a write of the store (``intake.py``, ``delivery.py``,
``sql.py``), only for jobs with a key: a job without one costs no statement.
What each job becomes is ``app/core/ordering.py``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby

from sqlalchemy import Executable, TextClause, bindparam, text, update

from app.core.job import JobRecord, JobState
from app.core.ordering import behind
from app.storage.counts import Tally
from app.storage.dialect import Dialect
from app.storage.engine import Conn
from app.storage.models import BEHIND_SQL, jobs, ordering_heads

_NEXT = text(
    "SELECT id FROM jobs WHERE target = :target AND ordering_key = :key "
    f"AND {BEHIND_SQL} ORDER BY ordering_seq LIMIT 1"
)
# the next of the line made its head, at its own time if that has not come: one
# statement finds and moves it. Guarded: a job another writer cancelled or expired
# meanwhile is not behind any more (then ``_NEXT`` says whether another is). The
# guard says "behind" by the columns only such a job has set and unset, not by
# ix_jobs_line's term, so that the row is found by its primary key, not by a walk
# of that index.
_LEAD_NEXT = text(
    "UPDATE jobs SET state = CASE WHEN not_before > :now THEN 'scheduled' ELSE 'queued' END, "
    "next_attempt_at = CASE WHEN not_before > :now THEN not_before ELSE :now END, "
    "not_before = NULL, updated_at = :now "
    "WHERE id = (SELECT id FROM jobs WHERE target = :target AND ordering_key = :key "
    f"AND {BEHIND_SQL} ORDER BY ordering_seq LIMIT 1) "
    "AND not_before IS NOT NULL AND completed_at IS NULL RETURNING id, state"
)
_SET_HEAD = text(
    "UPDATE ordering_heads SET head_id = :id WHERE target = :target AND ordering_key = :key"
)
_DROP_LINE = text("DELETE FROM ordering_heads WHERE target = :target AND ordering_key = :key")
# lines whose head finished (or is gone) with no one to move them on: what
# ``repair`` finds, should a write that finished a head ever have missed it
_STRANDED = text(
    "SELECT h.target, h.ordering_key, h.head_id FROM ordering_heads h "
    "LEFT JOIN jobs j ON j.id = h.head_id "
    "WHERE j.id IS NULL OR j.state IN ('succeeded', 'failed', 'cancelled')"
)
_HEAD = text("SELECT head_id FROM ordering_heads WHERE target = :target AND ordering_key = :key")
# a job behind its head: its time kept for when it leads, and its place
_WAIT = (
    update(jobs)
    .where(jobs.c.id == bindparam("job_id"))
    .values(
        state="scheduled",
        next_attempt_at=None,
        not_before=bindparam("due"),
        ordering_seq=bindparam("seq"),
    )
)
_PLACE = update(jobs).where(jobs.c.id == bindparam("job_id")).values(ordering_seq=bindparam("seq"))


@dataclass(frozen=True, slots=True)
class LineStatements:
    """The statements on lines whose text depends on the dialect."""

    join: Executable
    lock_head: TextClause
    #: whether writers lock rows (Postgres): then a line's head is read first without
    #: a lock, so that a writer ending a job behind the head never waits for the line
    locks_rows: bool

    @classmethod
    def build(cls, dialect: Dialect) -> LineStatements:
        insert = dialect.insert(ordering_heads)
        return cls(
            join=insert.on_conflict_do_update(
                index_elements=["target", "ordering_key"],
                set_={"last_seq": ordering_heads.c.last_seq + insert.excluded.last_seq},
            ).returning(ordering_heads.c.head_id, ordering_heads.c.last_seq),
            lock_head=text(
                "SELECT head_id FROM ordering_heads WHERE target = :target "
                f"AND ordering_key = :key{dialect.lock_row}"
            ),
            locks_rows=bool(dialect.lock_row),
        )


def _line(job: JobRecord) -> tuple[str, str]:
    assert job.ordering_key is not None
    return job.target, job.ordering_key


async def join(
    conn: Conn, s: LineStatements, joining: Sequence[JobRecord], tally: Tally, now: float
) -> dict[str, JobRecord]:
    """Put ``joining`` (jobs just stored, or retried, each with a key, in the order they
    were accepted) at the end of their lines; those that do not lead wait behind.
    Answers each job as it now is, by id."""
    out: dict[str, JobRecord] = {}
    ordered = sorted(enumerate(joining), key=lambda p: (*_line(p[1]), p[0]))
    for (target, key), group in groupby(ordered, key=lambda p: _line(p[1])):
        members = [job for _, job in group]
        row = (
            await conn.execute(
                s.join,
                {
                    "target": target,
                    "ordering_key": key,
                    "head_id": members[0].id,
                    "last_seq": len(members),
                },
            )
        ).one()
        head_id, last_seq = row[0], int(row[1])
        first_seq = last_seq - len(members) + 1
        places: list[dict[str, object]] = []
        waits: list[dict[str, object]] = []
        for seq, job in enumerate(members, start=first_seq):
            if job.id == head_id:
                places.append({"job_id": job.id, "seq": seq})
                out[job.id] = job
                continue
            due = job.next_attempt_at if job.next_attempt_at is not None else now
            waits.append({"job_id": job.id, "seq": seq, "due": due})
            out[job.id] = behind(job)
            tally.moved(target, job.state, JobState.SCHEDULED, now)
        if places:
            await conn.execute(_PLACE, places)
        if waits:
            await conn.execute(_WAIT, waits)
    return out


async def move_on(
    conn: Conn,
    s: LineStatements,
    finished: Iterable[tuple[str, str | None, str]],
    tally: Tally,
    now: float,
) -> list[str]:
    """After jobs became terminal ((target, ordering key, id) each; those without a key
    are passed over): the next of each line a finished head led takes the lead.
    Answers the ids of the jobs made heads."""
    items = sorted((t, k, i) for t, k, i in set(finished) if k is not None)
    led: list[str] = []
    for target, key, job_id in items:
        line = {"target": target, "key": key}
        if s.locks_rows and (await conn.execute(_HEAD, line)).scalar() != job_id:
            continue  # a job behind its head left: the line goes on as it was
        # (read again) under the row's lock: one writer at a time decides who leads
        if (await conn.execute(s.lock_head, line)).scalar() != job_id:
            continue
        while True:
            lead = (await conn.execute(_LEAD_NEXT, {**line, "now": now})).first()
            if lead is not None:
                await conn.execute(_SET_HEAD, {**line, "id": lead[0]})
                tally.moved(target, JobState.SCHEDULED, JobState(lead[1]), now)
                led.append(lead[0])
                break
            if (await conn.execute(_NEXT, line)).scalar() is None:
                await conn.execute(_DROP_LINE, line)  # no one behind: the line ends
                break
    return led


async def stranded(conn: Conn) -> list[tuple[str, str, str]]:
    """Lines whose head finished or is gone: (target, key, head id)."""
    return [(r[0], r[1], r[2]) for r in await conn.execute(_STRANDED)]
