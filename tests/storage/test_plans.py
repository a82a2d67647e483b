"""Every hot statement reads the jobs table through its index, on both backends.

A database holding what a busy gateway holds (thousands of finished jobs, a
deep schedule at one target, a queue, running attempts, retries, several
callers of very different sizes) is seeded through the store's own
connections, then each statement the dispatcher, maintenance, intake and the
dashboard run is explained there, and its plan must name the index it was
written for and read no table in full.

- SQLite plans as csjd leaves it: without statistics, since csjd never runs
  ``ANALYZE`` (``app/storage/statements.py`` says why). The plan is the one the
  gateway gets.
- Postgres plans from statistics that autovacuum gathers in its own time;
  csjd does not run ``ANALYZE`` either, and a freshly seeded database has
  none. A cost-based planner may then rightly prefer a sequential scan of a
  small table, and later, with statistics, of one where most rows match. So
  there the plans are taken with ``enable_seqscan = off``: the check is that
  an index can serve each statement (without one, Postgres still scans the
  table, and the plan says so) and that it is the intended one.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import ClauseElement, TextClause, TextualSelect, insert, select, text

from app.core.job import FailureReason, JobState
from app.core.target import TargetSpec
from app.settings import Settings
from app.storage import ordering, postgres, statements, values
from app.storage.base import JobFilter
from app.storage.engine import Conn
from app.storage.factory import build_store
from app.storage.models import attempts, jobs
from app.storage.sql import SqlJobStore

NOW = 1_800_000_000.0
DAY = 86400.0
RETENTION_S = 7 * DAY
RNG_SEED = 15

#: the primary keys' indexes, as each backend names them
PRIMARY = {"sqlite": "sqlite_autoindex_jobs_1", "postgresql": "jobs_pkey"}
BY_KEY = {"sqlite": "sqlite_autoindex_jobs_2", "postgresql": "uq_jobs_caller_key"}


def _job_id(ms: int, rng: random.Random) -> str:
    """A UUIDv7 of millisecond ``ms`` (the ids' order follows creation, as in csjd)."""
    value = ms << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """About 27,000 jobs created over the last eight days, and an attempt per finished one."""
    rng = random.Random(RNG_SEED)
    kinds = (
        [("succeeded", "billing")] * 4000
        + [("failed", "billing")] * 150
        + [("cancelled", "search")] * 100
        + [("scheduled", "parked")] * 20000
        + [("queued", "billing")] * 500
        + [("queued", "search")] * 100
        + [("running", "billing")] * 40
        + [("retrying", "search")] * 60
    )
    rng.shuffle(kinds)
    start = NOW - 8 * DAY
    step = 8 * DAY / len(kinds)
    rows: list[dict[str, Any]] = []
    tries: list[dict[str, Any]] = []
    for i, (state, target) in enumerate(kinds):
        created = start + i * step
        # one big caller, a middling one, a small one
        caller = rng.choices(["shop", "billing-svc", "alice"], weights=[85, 14.5, 0.5])[0]
        row: dict[str, Any] = {
            "id": _job_id(int(created * 1000), rng),
            "caller": caller,
            "idempotency_key": f"k-{i}",
            "fingerprint": "f" * 64,
            "target": target,
            "payload": b'{"n":1}',
            "headers": None,
            "state": state,
            "attempts": 0,
            "deliveries": 0,
            "max_attempts": 10,
            "created_at": created,
            "updated_at": created,
            "next_attempt_at": None,
            "expires_at": created + DAY,
            "completed_at": None,
            "claimed_at": None,
            "lease_expires_at": None,
            "last_status_code": None,
            "last_error": None,
            "failure_reason": None,
        }
        if state in ("succeeded", "failed", "cancelled"):
            row.update(attempts=1, deliveries=1, completed_at=created + 1.0)
            tries.append(
                {
                    "job_id": row["id"],
                    "n": 1,
                    "started_at": created + 0.5,
                    "finished_at": created + 1.0,
                    "duration_ms": 500.0,
                    "status_code": 200 if state == "succeeded" else 500,
                    "outcome": "success" if state == "succeeded" else "permanent",
                }
            )
        elif state == "scheduled":  # far in the future, and unexpired until then
            due = NOW + rng.uniform(1, 20) * DAY
            row.update(next_attempt_at=due, expires_at=due + DAY)
        elif state == "queued":
            row.update(next_attempt_at=NOW - rng.uniform(0, 5), expires_at=NOW + DAY)
        elif state == "running":
            lease = NOW + rng.uniform(-5, 30)  # a few leases ran out
            row.update(deliveries=1, claimed_at=NOW - 1, lease_expires_at=lease)
            row.update(expires_at=NOW + DAY)
        else:  # retrying
            row.update(attempts=1, deliveries=1, next_attempt_at=NOW + rng.uniform(1, 60))
            row.update(expires_at=NOW + DAY)
        rows.append(row)
    return rows, tries


@pytest.fixture
async def store(backend_url: str) -> AsyncIterator[SqlJobStore]:
    s = build_store(Settings(database_url=backend_url, max_backlog=1_000_000))
    await s.open()
    for name in ("billing", "search", "parked"):
        await s.put_target(TargetSpec(name=name, url="http://x/hook"), NOW - 9 * DAY)
    rows, tries = _rows()

    async def seed(conn: Conn) -> None:
        await conn.execute(insert(jobs), rows)
        await conn.execute(insert(attempts), tries)

    await s.database.write(seed)
    yield s
    await s.close()


def _hot(store: SqlJobStore, conn: Conn) -> dict[str, tuple[ClauseElement | str, Any, set[str]]]:
    """name -> (statement, its parameters, the indexes its plan must use)."""
    dialect = conn.dialect.name
    pk, by_key = PRIMARY[dialect], BY_KEY[dialect]
    built = store.statements
    purge = {"before": NOW - RETENTION_S, "limit": statements.PURGE_BATCH}
    claim = {
        "now": NOW,
        "target": "billing",
        "limit": 64,
        "retries": 64,
        "lease_expires_at": NOW + 30,
    }
    completions = 2
    complete = values.complete_running(store.dialect, completions)
    completion = ("some-id", 1, "succeeded", 1, None, NOW, None, 1, 200, None, NOW, 0, None)

    def listing(**where: Any) -> ClauseElement:
        return statements.list_query(JobFilter(**where), limit=51, before_id=None)

    def counting(**where: Any) -> ClauseElement:
        return statements.count_query(JobFilter(**where))

    hot: dict[str, tuple[ClauseElement | str, Any, set[str]]] = {
        # the dispatcher, every claim round
        "promote": (built.promote, {"now": NOW}, {"ix_jobs_waiting"}),
        "claim": (
            built.claim,
            claim,
            {"ix_jobs_claim_first", "ix_jobs_claim_retry", pk},
        ),
        "next_due": (statements.NEXT_DUE, {}, {"ix_jobs_waiting"}),
        "complete": (complete, completion * completions, {pk}),
        # maintenance, every tick or every purge
        **{
            f"fail_expired_{i}": (statement, {"now": NOW}, {"ix_jobs_expiry"})
            for i, statement in enumerate(built.fail_expired)
        },
        "stale_running": (
            built.stale_running,
            {"before": NOW},
            {"ix_jobs_running"},
        ),
        "purge_attempts": (
            built.purge_attempts,
            purge,
            {"ix_jobs_completed", "ix_attempts_job"},
        ),
        "purge_jobs": (
            built.purge_jobs,
            purge,
            {"ix_jobs_completed", pk},
        ),
        "count_finished_by_state": (statements.COUNT_FINISHED_BY_STATE, {}, {"ix_jobs_finished"}),
        # intake's replays, GET /jobs, the dashboard, GET /targets, DELETE /targets
        "rows_by_key": (
            select(jobs).where(jobs.c.caller == "shop", jobs.c.idempotency_key.in_(["k-1"])),
            {},
            {by_key},
        ),
        "list_jobs_of_a_caller": (listing(caller="alice"), {}, {"ix_jobs_caller_id"}),
        "list_failed_jobs": (listing(state=JobState.FAILED), {}, {"ix_jobs_finished"}),
        "list_jobs_of_a_target": (listing(target="search"), {}, {"ix_jobs_target_id"}),
        "list_jobs_failed_for_a_reason": (
            listing(reason=FailureReason.EXPIRED),
            {},
            {"ix_jobs_finished"},
        ),
        # (an id is never older than its job: the primary key bounds a creation time
        # from below; a bound from above alone, like no bound, walks it newest first)
        "list_jobs_created_after": (listing(created_after=NOW - DAY), {}, {pk}),
        # by (caller, id) or by (caller, idempotency_key): either reads one caller's
        "count_jobs_of_a_caller": (counting(caller="alice"), {}, set()),
        "count_failed_jobs": (counting(state=JobState.FAILED), {}, {"ix_jobs_finished"}),
        "count_queued_jobs": (counting(state=JobState.QUEUED), {}, {"ix_jobs_active"}),
        "count_jobs_of_a_target": (counting(target="search"), {}, {"ix_jobs_target_id"}),
        "count_jobs_failed_for_a_reason": (
            counting(reason=FailureReason.EXPIRED),
            {},
            {"ix_jobs_finished"},
        ),
        "count_jobs_created_after": (counting(created_after=NOW - DAY), {}, {pk}),
        # ordering keys: the next of a line, the heads an expiry finished, a key's jobs
        "next_of_a_line": (
            ordering._NEXT,
            {"target": "billing", "key": "order-1"},
            {"ix_jobs_line"},
        ),
        "lead_the_next_of_a_line": (
            ordering._LEAD_NEXT,
            {"target": "billing", "key": "order-1", "now": NOW},
            {"ix_jobs_line", pk},
        ),
        "expired_now_followed": (
            statements.EXPIRED_NOW_FOLLOWED,
            {"now": NOW},
            {"ix_jobs_completed"},
        ),
        "list_jobs_of_an_ordering_key": (
            listing(ordering_key="order-1"),
            {},
            {"ix_jobs_ordering_key"},
        ),
        # maintenance's check of the backlog the writes keep
        "backlog_counted": (statements.BACKLOG, {}, {"ix_jobs_active"}),
        "target_busy": (statements.BUSY, {"t": "billing"}, {"ix_jobs_active"}),
        "target_called_back": (statements.CALLED_BACK_BY, {"t": "billing"}, {"ix_jobs_callback"}),
    }
    if dialect == "postgresql":  # counted under its advisory lock on Postgres only
        hot["target_room"] = (
            postgres.TARGET_ROOM,
            {"target": "billing", "lock_class": postgres.CLAIM_LOCK_CLASS},
            {"ix_jobs_active"},
        )
    return hot


async def _plan(conn: Conn, statement: ClauseElement | str, params: Any) -> list[str]:
    explain = "EXPLAIN " if conn.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    if isinstance(statement, TextualSelect):  # text with its result columns
        statement = statement.element
    if isinstance(statement, str):  # driver SQL, as the store sends it
        rows = await conn.exec_driver_sql(explain + statement, tuple(params))
    elif isinstance(statement, TextClause):
        rows = await conn.execute(text(explain + statement.text), params)
    else:  # bound as SQLAlchemy binds it when the store executes it
        compiled = statement.compile(
            dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
        )
        values = tuple(compiled.params[name] for name in compiled.positiontup or ())
        rows = await conn.exec_driver_sql(explain + str(compiled), values)
    # SQLite: (id, parent, notused, detail); Postgres: one line of text per row
    return [str(row[-1]) for row in rows]


def _faults(dialect: str, plan: list[str], expected: set[str]) -> list[str]:
    text_ = "\n".join(plan)
    faults = [
        f"does not use {name}"
        for name in sorted(expected)
        if not re.search(rf"\b{re.escape(name)}\b", text_)
    ]
    if dialect == "sqlite":
        # SCAN is a full pass over the table or over a whole index of it
        faults += [line for line in plan if re.match(r"SCAN (jobs|attempts)\b", line.strip())]
    else:
        faults += [line for line in plan if re.search(r"Seq Scan on (jobs|attempts)\b", line)]
    return faults


async def _explain_all(store: SqlJobStore, *before: str) -> dict[str, tuple[list[str], set[str]]]:
    """Every hot statement's plan and the indexes it must use, after ``before``."""

    async def unit(conn: Conn) -> dict[str, tuple[list[str], set[str]]]:
        for statement in before:
            await conn.execute(text(statement))
        return {
            name: (await _plan(conn, statement, params), expected)
            for name, (statement, params, expected) in _hot(store, conn).items()
        }

    return await store.database.read(unit)


def _report(faults: dict[str, tuple[list[str], list[str]]]) -> str:
    return "\n".join(f"{name}: {found}\n    {plan}" for name, (found, plan) in faults.items())


async def test_every_hot_statement_reads_by_its_index(store: SqlJobStore) -> None:
    dialect = store.database.dialect.name
    # Postgres: see the module's docstring. Sorts are off as well: without
    # statistics Postgres guesses a handful of rows per caller and would sort
    # them, where a caller may have millions; (caller, id) must hand them over
    # in order.
    settings = ("SET enable_seqscan = off", "SET enable_sort = off")
    plans = await _explain_all(store, *(settings if dialect == "postgresql" else ()))
    faults = {
        name: (found, plan)
        for name, (plan, expected) in plans.items()
        if (found := _faults(dialect, plan, expected))
    }
    assert not faults, _report(faults)


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
async def test_an_operators_analyze_turns_no_sqlite_plan_into_a_scan(
    store: SqlJobStore,
) -> None:
    # csjd never analyses SQLite, but an operator may; the statistics of a
    # realistic table must not send any hot statement back to a full scan (the
    # planner may then pick another index: the dashboard's accepted jobs are
    # read per target over the same id range, for one)
    plans = await _explain_all(store, "ANALYZE")
    faults = {
        name: (found, plan)
        for name, (plan, _) in plans.items()
        if (found := _faults("sqlite", plan, set()))
    }
    assert not faults, _report(faults)
