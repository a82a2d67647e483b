"""What a database error means, so that storage can decide what to do with it.

Every error a driver raises is one of three kinds:

- ``TRANSIENT``: the database could not do it now, but the same work may
  succeed a moment later: the connection dropped or cannot be made, the
  server is restarting (``57P01`` to ``57P03``), a deadlock (``40P01``) or a
  serialization failure (``40001``) chose this transaction, SQLite was busy
  or locked. Storage runs the work again, with backoff, and after its budget
  answers ``DatabaseUnavailable`` (``503`` + ``Retry-After``).
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
_PG_TRANSIENT_CLASSES = ("08", "53", "57P", "58")
_PG_TRANSIENT_CODES = {"40001", "40P01", "55P03"}
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
    # asyncpg's own exceptions when they arrive unwrapped: a dropped or closed link
    name = type(error).__name__
    if name in {"ConnectionDoesNotExistError", "InterfaceError", "ConnectionFailureError"}:
        return Fault.TRANSIENT
    cause = error.__cause__
    return _driver(cause) if cause is not None and cause is not error else None
