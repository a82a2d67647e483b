"""A private Postgres server per test: its own folder, port, log, and life.

The machine's shared server (``tests/pg.py``) may not be stopped under other
tests, so the faults that need a server to go away get one of their own:
``initdb`` into a temporary folder, a free port on 127.0.0.1 only, its unix
socket inside the folder, trust auth, and no fsync (a test server loses
nothing it needs when the host crashes). Commits stay synchronous, so an
``immediate`` stop, a crash of the server alone, keeps every commit.
``initdb`` and ``postgres`` refuse to run as root, so under root (CI) they
run as the ``postgres`` user, who then owns the folder.

The log is a plain file; with ``log_lock_waits=on`` and a short
``deadlock_timeout`` (``LOCK_WATCH``) it names every lock wait and deadlock,
which ``lock_waits()`` and ``deadlocks()`` return.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from app.storage.migrate import upgrade
from tests.needs import missing

T = TypeVar("T")

#: settings that make the log name every lock wait and deadlock, 50 ms into it
LOCK_WATCH: Mapping[str, str] = {"log_lock_waits": "on", "deadlock_timeout": "'50ms'"}

_BASE_SETTINGS: Mapping[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "'32MB'",
    "max_connections": "100",
    "log_line_prefix": "'%m [%p] %d '",
    "log_timezone": "'UTC'",
}


def bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: the newest ``/usr/lib/postgresql/N/bin``, or
    ``pg_config --bindir``."""
    versions = Path("/usr/lib/postgresql")
    if versions.is_dir():
        found = sorted(
            (p for p in versions.iterdir() if (p / "bin" / "initdb").exists()),
            key=lambda p: int(p.name) if p.name.isdigit() else -1,
        )
        if found:
            return found[-1] / "bin"
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists():
            return path
    return None


def require_bindir() -> Path:
    """The Postgres binaries; skips without them (fails under ``CI=true``)."""
    path = bindir()
    if path is None:
        missing(
            "no PostgreSQL server binaries (initdb, pg_ctl) on this machine",
            in_ci="the private-Postgres tests must run",
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _off_the_loop(make: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, bounded()).result(timeout + 5)


class PrivatePostgres:
    """One Postgres server of the test's own. ``settings`` add to (or override)
    ``postgresql.conf``, values as Postgres reads them (quote strings:
    ``{"deadlock_timeout": "'50ms'"}``)."""

    def __init__(self, *, settings: Mapping[str, str] | None = None) -> None:
        self.bin = require_bindir()
        self._as_postgres = os.geteuid() == 0
        # the postgres user must reach the folder: not under root's private pytest folders
        self.root = Path(
            tempfile.mkdtemp(prefix="csjd-pg-", dir="/tmp" if self._as_postgres else None)
        )
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.port = free_port()
        self.settings = {**_BASE_SETTINGS, **(settings or {})}
        self._initialised = False

    # -- running the binaries --------------------------------------------------------

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        return subprocess.run(
            [*prefix, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
        )

    def _checked(self, *args: str, timeout: float = 60) -> str:
        done = self._run(*args, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
                f"\n--- server log ---\n{self.log_text()[-4000:]}"
            )
        return done.stdout

    def init(self) -> None:
        self._checked(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        lines = [f"port = {self.port}", f"unix_socket_directories = '{self.root}'"]
        lines += [f"{name} = {value}" for name, value in self.settings.items()]
        # appended as root, read by postgres: the file keeps initdb's owner and mode
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# csjd test harness\n" + "\n".join(lines) + "\n")
        self._initialised = True

    # -- life --------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> PrivatePostgres:
        """Start the server (``initdb`` first, once) and wait until it accepts connections."""
        if not self._initialised:
            self.init()
        self._checked(
            str(self.bin / "pg_ctl"),
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(int(timeout)),
            timeout=timeout + 10,
        )
        return self

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """Stop the server: ``fast`` (sessions cut, clean shutdown) or ``immediate``
        (as if it crashed; recovery runs at the next start)."""
        self._checked(
            str(self.bin / "pg_ctl"),
            "stop",
            "-D",
            str(self.data),
            "-m",
            mode,
            "-w",
            "-t",
            str(int(timeout)),
            timeout=timeout + 10,
        )

    @contextlib.contextmanager
    def down(self, mode: str = "fast") -> Iterator[None]:
        """Stopped inside the block; started again after it, on the same port and data."""
        self.stop(mode)
        try:
            yield
        finally:
            self.start()

    @property
    def running(self) -> bool:
        if not self._initialised:
            return False
        done = self._run(str(self.bin / "pg_ctl"), "status", "-D", str(self.data), timeout=10)
        return done.returncode == 0

    def close(self) -> None:
        """Stop the server whatever state it is in and remove its folder."""
        try:
            if self.running:
                self.stop("immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            self._kill_postmaster()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        # the last resort: the server this object started, by the pid it recorded
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # raises once it is gone
                time.sleep(0.05)

    # -- databases ---------------------------------------------------------------------

    def dsn(self, database: str = "postgres") -> str:
        """For asyncpg and libpq."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def url(self, database: str = "postgres") -> str:
        """For csjd (``CSJD_DATABASE_URL``) and SQLAlchemy."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def query(self, sql: str, *args: Any, database: str = "postgres", timeout: float = 10) -> Any:
        """Rows of one statement, from sync or async code alike."""

        async def go() -> Any:
            conn = await asyncpg.connect(self.dsn(database), timeout=timeout)
            try:
                return await conn.fetch(sql, *args)
            finally:
                await conn.close(timeout=timeout)

        return _off_the_loop(go, timeout)

    @contextlib.contextmanager
    def holding(self, *statements: str, database: str = "postgres") -> Iterator[None]:
        """Inside the block, a transaction that ran ``statements`` stays open, its
        locks and uncommitted rows in everyone's way; it is rolled back after. A
        starting gate: whoever needs those rows waits, then all go at once."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="csjd-pg-holder", daemon=True)
        thread.start()

        def call(make: Callable[[], Awaitable[T]], timeout: float = 10) -> T:
            async def bounded() -> T:
                async with asyncio.timeout(timeout):
                    return await make()

            return asyncio.run_coroutine_threadsafe(bounded(), loop).result(timeout + 5)

        try:
            conn = call(lambda: asyncpg.connect(self.dsn(database), timeout=10))
            try:
                call(lambda: conn.execute("BEGIN"))
                for statement in statements:
                    call(lambda statement=statement: conn.execute(statement))
                yield
                call(lambda: conn.execute("ROLLBACK"))
            finally:
                call(lambda: conn.close(timeout=5))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    def lock_waiters(self, database: str) -> int:
        """Sessions of ``database`` waiting for a lock (row, table, transaction, advisory)."""
        rows = self.query(
            "SELECT count(*)::int AS n FROM pg_stat_activity "
            "WHERE datname = $1 AND wait_event_type = 'Lock'",
            database,
        )
        return int(rows[0]["n"])

    def create_database(self, name: str | None = None) -> str:
        """An empty database's URL (csjd migrates it when it starts)."""
        name = name or f"csjd_{uuid.uuid4().hex[:12]}"
        self.query(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def migrated_database(self, name: str | None = None) -> str:
        """A migrated database's URL."""
        url = self.create_database(name)

        async def migrate() -> None:
            await asyncio.to_thread(upgrade, url)

        _off_the_loop(migrate, 120)
        return url

    # -- what the server saw ------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self, containing: str) -> list[str]:
        return [line for line in self.log_text().splitlines() if containing in line]

    def lock_waits(self) -> list[str]:
        """Log lines of lock waits longer than ``deadlock_timeout`` (needs ``log_lock_waits``)."""
        return self.log_lines("still waiting for")

    def deadlocks(self) -> list[str]:
        return self.log_lines("deadlock detected")

    def stat_deadlocks(self) -> int:
        """Deadlocks counted by the server, all databases; backends report them
        within about a second, so poll this rather than read it once."""
        rows = self.query("SELECT coalesce(sum(deadlocks), 0)::int AS n FROM pg_stat_database")
        return int(rows[0]["n"])
