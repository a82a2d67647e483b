"""Another process holding a SQLite database's write lock, as a stray writer would.

``SqliteWriteLock(path, seconds)`` starts a small Python child that opens the
file, takes the write lock with ``BEGIN IMMEDIATE``, says so, and holds it
until ``seconds`` pass or the test calls ``release()``, then commits and exits.
``start()`` returns only once the lock is held, so a test knows every write
the gateway tries from then on meets a busy database. Readers are not blocked
(the gateway's files are in WAL mode).
"""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
import time
from pathlib import Path

_HOLDER = """
import select, sqlite3, sys
path, seconds = sys.argv[1], float(sys.argv[2])
conn = sqlite3.connect(path, isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
# until told (a line, or stdin closed) or until the time is up
select.select([sys.stdin], [], [], seconds)
conn.execute("COMMIT")
print("released", flush=True)
"""


class SqliteWriteLock:
    """Use as a context manager, or ``start()`` / ``release()``."""

    def __init__(self, path: Path, seconds: float) -> None:
        if not path.exists():
            raise FileNotFoundError(f"no SQLite database at {path}")
        self.path = path
        self.seconds = seconds
        self.proc: subprocess.Popen[str] | None = None
        self.locked_at: float | None = None

    def _line(self, deadline: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([self.proc.stdout], [], [], max(remaining, 0))
        if not ready:
            raise TimeoutError(f"the lock holder said nothing:\n{self._stderr()}")
        return self.proc.stdout.readline().strip()

    def _stderr(self) -> str:
        assert self.proc is not None
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def start(self, timeout: float = 30) -> SqliteWriteLock:
        """Start the holder and return once it holds the lock (it may first wait its turn)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(self.path), str(self.seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = self._line(time.monotonic() + timeout)
            if line != "locked":
                raise RuntimeError(f"the lock holder failed ({line!r}):\n{self._stderr()}")
        except BaseException:
            self.proc.kill()
            self.release()
            raise
        self.locked_at = time.monotonic()
        return self

    def release(self, timeout: float = 30) -> None:
        """Commit now (if still holding) and wait for the holder to exit."""
        if self.proc is None:
            return
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            # a holder that already let go has closed its end
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write("\n")
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise
        finally:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()

    def wait(self, timeout: float) -> int:
        """Wait for the holder to let go by itself (``seconds`` after it took the lock)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def __enter__(self) -> SqliteWriteLock:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.release()
