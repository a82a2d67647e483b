"""What a database error means, so that storage can decide what to do with it.

Every error a driver raises is one of three kinds:

- ``TRANSIENT``: the database could not do it now, but the same work may
  succeed a moment later: the connection dropped or cannot be made, the
  server is restarting (``57P01`` to ``57P03``) or short of resources (class
  ``53``) or failing over (``25006``, read-only), a deadlock (``40P01``) or a
  serialization failure (``40001``) chose this transaction, SQLite was busy,
  locked, full or could not do its I/O. Storage runs the work again, with
  backoff, and after its budget answers ``DatabaseUnavailable`` (``503`` +
  ``Retry-After``).
- ``REFUSED``: the database refuses these values (a data exception, class
  ``22``; a constraint, class ``23``). Running it again changes nothing; only
  the request that brought the values fails.
- ``BUG``: anything else (a wrong statement, a driver fault). It is raised
  as it is, and is a ``500``.

Pure: looks only at the exception and its causes.
"""

from __future__ import annotations

import sqlite3
from enum import Enum

from sqlalchemy import exc as sa

# the SQLite primary result codes that say "not now"
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_IOERR = 10
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_TRANSIENT = {_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN}

# SQLSTATE classes and codes (PostgreSQL appendix A)
_PG_TRANSIENT_CLASSES = ("08", "53", "57P")
# serialization, deadlock, lock not available, a read-only transaction (a
# failover under way), an I/O error on the server
_PG_TRANSIENT_CODES = {"40001", "40P01", "55P03", "25006", "58030"}
_PG_REFUSED_CLASSES = ("22", "23")


class Fault(Enum):
    TRANSIENT = "transient"
    REFUSED = "refused"
    BUG = "bug"


def classify(exc: BaseException) -> Fault:
    if isinstance(exc, sa.DBAPIError):
        if exc.connection_invalidated:
            return Fault.TRANSIENT
        return _driver(exc.orig) or (
            Fault.REFUSED if isinstance(exc, sa.IntegrityError | sa.DataError) else Fault.BUG
        )
    if isinstance(exc, sa.DisconnectionError | sa.TimeoutError):
        return Fault.TRANSIENT  # a pool that could not hand out a live connection
    return _driver(exc) or Fault.BUG


_CONTENTION_SQLSTATES = {"40001", "40P01", "55P03"}


def contention(exc: BaseException) -> bool:
    """Whether ``exc`` says other writers were in the way (a lock, a deadlock, a
    serialization failure), rather than that the database or the work failed."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "sqlstate", None) in _CONTENTION_SQLSTATES:
            return True
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return True
        error = getattr(error, "orig", None) or error.__cause__
    return False


def _driver(error: BaseException | None) -> Fault | None:
    if error is None:
        return None
    if isinstance(error, OSError | ConnectionError | TimeoutError):
        return Fault.TRANSIENT
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str):
        if sqlstate in _PG_TRANSIENT_CODES or sqlstate.startswith(_PG_TRANSIENT_CLASSES):
            return Fault.TRANSIENT
        if sqlstate.startswith(_PG_REFUSED_CLASSES):
            return Fault.REFUSED
        return None
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_TRANSIENT:
            return Fault.TRANSIENT
        if isinstance(error, sqlite3.IntegrityError | sqlite3.DataError):
            return Fault.REFUSED
        return None
    # asyncpg's own exceptions when they arrive unwrapped (or SQLAlchemy's adapter
    # of them): a dropped or closed link. An interface error that says nothing of
    # the connection is a misuse, a bug: not run again.
    name = type(error).__name__
    if name in {"ConnectionDoesNotExistError", "ConnectionFailureError"}:
        return Fault.TRANSIENT
    if name == "InterfaceError" and _says_connection_lost(str(error)):
        return Fault.TRANSIENT
    cause = error.__cause__
    return _driver(cause) if cause is not None and cause is not error else None


def _says_connection_lost(message: str) -> bool:
    message = message.lower()
    return "connection" in message and any(
        word in message for word in ("closed", "lost", "reset", "terminat")
    )
