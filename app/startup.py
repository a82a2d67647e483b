"""What ``csjd serve`` and ``csjd migrate`` say as they start, and why they cannot.

A start that cannot work is one line a person can act on and an exit status,
never a traceback: ``StartFailed`` carries both, and ``app/cli.py`` prints it.
``listen`` binds the listening socket before anything else starts, so a port
already taken fails at once, before migrations, dispatching or the
``gateway_started`` line. ``database_failure`` recognises a database that
cannot be reached, does not exist, refuses the login, or cannot be opened
(SQLite in a directory that is not there or not writable) in the chain of
whatever a start raised; anything else (a bug) keeps its traceback.
``started_fields`` are the facts of the ``gateway_started`` line. No message
here holds a password: the database is named by ``Settings.database_shown``.
"""

from __future__ import annotations

import errno
import socket
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from app import __version__
from app.settings import Settings

if TYPE_CHECKING:
    from app.gateway import Gateway

#: the exit status of a configuration csjd cannot use
INVALID_CONFIGURATION = 2
#: the exit status of a database csjd cannot use
DATABASE_UNUSABLE = 2
#: the exit status of an address csjd cannot listen on
CANNOT_LISTEN = 1

#: Postgres error classes that say the database cannot be used at all, as opposed
#: to a statement that failed: connection exceptions (08), a refused login (28),
#: no such database (3D), too many connections or no room (53), a server starting
#: up or shutting down (57)
_UNUSABLE_SQLSTATE_CLASSES = frozenset({"08", "28", "3D", "53", "57"})
#: SQLite's result codes for a file it cannot open, write or read as a database
_UNUSABLE_SQLITE = ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_NOTADB")
#: addresses that mean "every interface": browse them at the loopback address
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


class StartFailed(Exception):
    """csjd cannot start; ``str()`` is the line to print, ``status`` the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def listen(host: str, port: int, option: str = "--port") -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening: uvicorn does that);
    ``StartFailed`` when the address is taken or not this machine's (naming
    ``option``, the flag that picks another port)."""
    where = f"{_bracketed(host)}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartFailed(f"cannot listen on {where}: {_os_reason(exc)}", CANNOT_LISTEN) from None
    try:
        # as uvicorn and asyncio do: a restart may bind while old connections linger,
        # and an IPv6 address is IPv6 only
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = _os_reason(exc)
        if exc.errno == errno.EADDRINUSE:
            reason += f" (another csjd or another program has it; choose one with {option})"
        raise StartFailed(f"cannot listen on {where}: {reason}", CANNOT_LISTEN) from None
    return sock


def open_sqlite_file(settings: Settings) -> None:
    """Open the SQLite file once (creating it, as the migration would), so that a
    file csjd cannot open fails here, as a plain ``sqlite3`` error: aiosqlite,
    failing to open one, leaves a thread that prints a traceback once its event
    loop has closed. Nothing to do on Postgres or for a database in memory."""
    database = make_url(settings.database_url).database
    if settings.is_postgres or not database or database == ":memory:":
        return
    if database.startswith("file:"):
        return
    sqlite3.connect(database).close()


def database_failure(exc: BaseException, settings: Settings) -> StartFailed | None:
    """The one line for ``exc`` when it says the database cannot be used; else None."""
    reason = next(filter(None, map(_database_reason, _chain(exc))), None)
    if reason is None:
        return None
    line = f"cannot use the database {settings.database_shown}: {reason}"
    password = make_url(settings.database_url).password
    if password:  # a driver that echoed it would not get it printed
        line = line.replace(str(password), "***")
    return StartFailed(line, DATABASE_UNUSABLE)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _database_reason(exc: BaseException) -> str | None:
    # alembic is imported here, when a start failed: the parent of ``csjd serve
    # --workers`` binds its addresses through this module and never migrates itself
    from alembic.util import CommandError

    if isinstance(exc, CommandError):  # alembic: e.g. a revision this csjd does not know
        return f"{_first_line(exc)} (was it migrated by a newer csjd?)"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in _UNUSABLE_SQLSTATE_CLASSES:
        return _first_line(exc)
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorname", "").startswith(
        _UNUSABLE_SQLITE
    ):
        return f"{_first_line(exc)} (is its directory there, and writable?)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running, on that host and port?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve its host ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "timed out connecting"
    if isinstance(exc, FileExistsError | NotADirectoryError) and exc.filename:
        # (making the file's directory found a file in the way)
        return f"{exc.filename} is not a directory"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    return None


def _os_reason(exc: OSError) -> str:
    reason = exc.strerror or _first_line(exc)
    reason = reason[:1].lower() + reason[1:]
    return f"{reason}: {exc.filename}" if exc.filename else reason


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def url_of(sock: socket.socket) -> str:
    """The address ``sock`` is bound to, as a URL."""
    host, port = sock.getsockname()[:2]
    return f"http://{_bracketed(host)}:{port}"


def started_fields(gateway: Gateway, sock: socket.socket) -> dict[str, Any]:
    """The facts of ``gateway_started``: where it listens, which database, whether
    auth is on, and where a person finds the dashboard and the API's docs."""
    host, port = sock.getsockname()[:2]
    url = url_of(sock)
    browse = f"http://{_bracketed(_WILDCARDS.get(host, host))}:{port}"
    keys = len(gateway.keyring.names)
    return {
        "version": __version__,
        "role": gateway.role.value,
        "url": url,
        "database": gateway.settings.database_shown,
        "auth": "on" if gateway.keyring.enabled else "off",
        "api_keys": keys,
        "ui": f"{browse}/ui",
        "docs": f"{browse}/docs",
    }
