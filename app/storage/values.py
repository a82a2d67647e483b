"""The store's driver-level statements: many rows in one statement, through a VALUES list.

Where one transaction writes a row per job (new jobs at intake, the attempts
and completions a delivery batch records, the leases a heartbeat extends),
the statement is written here as SQL text for the driver, with the dialect's
placeholders (``Dialect.values_rows``, ``placeholder``), and its parameters
are a flat tuple in the order of the ``*_FIELDS`` names. SQLAlchemy's own
binding of many rows (a dict a row, its parameter construction and result
processing) cost a visible share of the SQLite writer thread, which holds the
GIL the event loop needs while it runs. ``records.py`` builds the rows; the
statements of ``statements.py`` are the ones that go through SQLAlchemy.
"""

from __future__ import annotations

from app.storage.dialect import Dialect

#: rows one statement writes: completions, leases, new jobs
CHUNK = 500

# One statement completes a whole chunk of attempts (UPDATE ... FROM a VALUES
# list); the guard on the delivery number (the lease token) and state makes stale rows
# match nothing, and RETURNING says which rows were written.
COMPLETE_FIELDS = (
    "id",
    "delivery",
    "state",
    "attempts",
    "next_attempt_at",
    "completed_at",
    "failure_reason",
    "recorded",
    "status_code",
    "error",
    "now",
    "unsent",
    "lapsed_before",
)
_COMPLETE_SQL_HEAD = f"WITH v({', '.join(COMPLETE_FIELDS)}) AS (VALUES "
_COMPLETE_SQL_TAIL = (
    ") UPDATE jobs SET state = v.state, attempts = v.attempts, "
    "next_attempt_at = v.next_attempt_at, completed_at = v.completed_at, "
    "failure_reason = v.failure_reason, "
    "last_status_code = CASE WHEN v.recorded = 1 THEN v.status_code "
    "ELSE jobs.last_status_code END, "
    "last_error = CASE WHEN v.recorded = 1 THEN v.error ELSE jobs.last_error END, "
    "lease_expires_at = NULL, updated_at = v.now, deliveries = jobs.deliveries - v.unsent "
    "FROM v WHERE jobs.id = v.id AND jobs.deliveries = v.delivery AND jobs.state = 'running' "
    # a rescue writes only over a lease still lapsed (a heartbeat may have renewed it)
    "AND (v.lapsed_before IS NULL OR jobs.lease_expires_at < v.lapsed_before) "
    "RETURNING jobs.id, jobs.ordering_key, jobs.callback_target"
)
_COMPLETE_TYPES = (
    "varchar",
    "int",
    "varchar",
    "int",
    "float8",
    "float8",
    "varchar",
    "int",
    "int",
    "varchar",
    "float8",
    "int",
    "float8",
)


#: the columns of a new job, in the order ``insert_jobs`` takes them (``records.job_row``)
JOB_FIELDS = (
    "id",
    "caller",
    "idempotency_key",
    "fingerprint",
    "target",
    "payload",
    "headers",
    "state",
    "attempts",
    "deliveries",
    "max_attempts",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "expires_at",
    "ordering_key",
    "callback_target",
)
_JOB_TYPES = (
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "bytea",
    "json",
    "varchar",
    "int",
    "int",
    "int",
    "float8",
    "float8",
    "float8",
    "float8",
    "varchar",
    "varchar",
)


def insert_jobs(dialect: Dialect, rows: int) -> str:
    """The driver-level statement inserting ``rows`` new jobs (``JOB_FIELDS`` each).
    The (caller, idempotency_key) constraint, not a read, decides who made a job:
    a key already stored is skipped, and the rows inserted answer their ids.
    Driver-level, like the completions, because SQLAlchemy's binding of many rows
    was about a sixth of the writer thread's time at intake."""
    return (
        f"INSERT INTO jobs ({', '.join(JOB_FIELDS)}) VALUES "
        + dialect.values_rows(rows, _JOB_TYPES)
        + " ON CONFLICT (caller, idempotency_key) DO NOTHING RETURNING id"
    )


#: an attempt's columns, in the order ``insert_attempts`` takes them (``records.attempt_row``)
ATTEMPT_FIELDS = (
    "job_id",
    "n",
    "started_at",
    "finished_at",
    "duration_ms",
    "status_code",
    "outcome",
    "error",
    "response_excerpt",
    "content_type",
    "response_bytes",
)
_ATTEMPT_TYPES = (
    "varchar",
    "int",
    "float8",
    "float8",
    "float8",
    "int",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "bigint",
)


def insert_attempts(dialect: Dialect) -> str:
    """The driver-level statement recording one attempt (``ATTEMPT_FIELDS``), run
    once for many: SQLAlchemy's binding of each row was a visible share of the
    writer thread's time in a drain."""
    values = ", ".join(dialect.placeholder(i + 1, t) for i, t in enumerate(_ATTEMPT_TYPES))
    return f"INSERT INTO attempts ({', '.join(ATTEMPT_FIELDS)}) VALUES ({values})"


def complete_running(dialect: Dialect, rows: int) -> str:
    """The driver-level statement completing ``rows`` attempts (``COMPLETE_FIELDS`` each)."""
    return _COMPLETE_SQL_HEAD + dialect.values_rows(rows, _COMPLETE_TYPES) + _COMPLETE_SQL_TAIL


def extend_leases(dialect: Dialect, rows: int) -> str:
    """The driver-level statement giving ``rows`` (id, delivery) pairs one new lease end."""
    until_at = dialect.placeholder(2 * rows + 1, "float8")
    return (
        "WITH v(id, delivery) AS (VALUES "
        + dialect.values_rows(rows, ("varchar", "int"))
        + f") UPDATE jobs SET lease_expires_at = {until_at} FROM v "
        "WHERE jobs.id = v.id AND jobs.deliveries = v.delivery "
        "AND jobs.lease_expires_at IS NOT NULL RETURNING jobs.id"
    )
