"""Wake-ups between the two processes of one SQLite gateway (``--role api|dispatcher``).

On Postgres every intake batch ``NOTIFY``s the replicas. A SQLite gateway
split over two processes has no such channel, so the API process tells the
dispatcher process itself: a one-byte datagram on a Linux abstract-namespace
Unix socket named after the database file (no file to clean up, no path
length limit). ``WakeSender`` sends at most one per event-loop turn however
many jobs that turn accepted; ``listen`` calls ``on_wake`` once per burst
received. A datagram lost (nobody listening, a full buffer) costs only
latency: the dispatcher still looks for due work every idle poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import Callable
from pathlib import Path

_RECV_BYTES = 4096


def address(database: Path) -> bytes:
    """The socket's abstract name: one per database file."""
    digest = hashlib.blake2b(str(database.resolve()).encode(), digest_size=12).hexdigest()
    return b"\0csjd-wake-" + digest.encode()


class WakeSender:
    """Call it after jobs became due; it tells the dispatcher process, coalesced."""

    def __init__(self, database: Path) -> None:
        self._address = address(database)
        self._sock: socket.socket | None = None
        self._pending = False

    def __call__(self) -> None:
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._pending = False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        with contextlib.suppress(OSError):  # no dispatcher yet, or it has wakes pending
            self._sock.sendto(b"!", self._address)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def listen(database: Path, on_wake: Callable[[], None]) -> None:
    """Call ``on_wake`` for every burst of wake-ups until cancelled."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            while sock.recv(_RECV_BYTES):
                pass
        on_wake()

    try:
        sock.bind(address(database))
        loop.add_reader(sock.fileno(), readable)
        await asyncio.Event().wait()  # until cancelled
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(sock.fileno())
        sock.close()
