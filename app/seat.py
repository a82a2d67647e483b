"""A worker's side of ``csjd serve --workers 2``: what the parent hands a child, and
the child's promise to die with it.

The parent (``app/workers.py``) starts each worker as ``csjd serve --role api``
or ``--role dispatcher`` with three options ``--help`` does not show: the
parent's pid, the listening socket it bound (an inherited file descriptor),
and the write end of a pipe. ``Seat`` carries them. The worker adopts the
socket instead of binding its own, skips the migration (the parent ran it),
writes one byte to the pipe once it accepts connections, and asks the kernel
to kill it when its parent dies (``die_with_parent``): a parent killed with
``kill -9`` cannot tell its workers to drain, so they go with it, as one
process would, and the next start finds the database's locks free and
rescues what was in flight. This module knows nothing of serving or of the
database.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from dataclasses import dataclass

#: ``PR_SET_PDEATHSIG`` from ``<linux/prctl.h>``
_PR_SET_PDEATHSIG = 1
#: what a worker exits with when its parent was gone before it could watch it
ORPHANED_EXIT = 1


@dataclass(frozen=True, slots=True)
class Seat:
    """Where a worker sits: its parent, the socket it serves on, how it says it is up."""

    parent_pid: int
    listen_fd: int
    ready_fd: int

    def argv(self) -> list[str]:
        """The options that give a ``csjd serve`` this seat."""
        return [
            "--worker-of",
            str(self.parent_pid),
            "--listen-fd",
            str(self.listen_fd),
            "--ready-fd",
            str(self.ready_fd),
        ]

    def listener(self) -> socket.socket:
        """The socket the parent bound, as this process's own."""
        sock = socket.socket(fileno=self.listen_fd)
        sock.set_inheritable(False)
        return sock

    def ready(self) -> None:
        """Tell the parent this worker accepts connections (once)."""
        try:
            os.write(self.ready_fd, b"1")
            os.close(self.ready_fd)
        except OSError:  # the parent is gone, or was told already: it no longer asks
            pass


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send this process ``SIGKILL`` when ``parent_pid`` (its parent)
    dies; exit at once if it already has. Linux only (``prctl``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    # the parent may have died before the line above: then this process was
    # adopted by another, and nothing will ever kill it
    if os.getppid() != parent_pid:
        print(f"csjd: the parent process {parent_pid} is gone; not starting", file=sys.stderr)
        raise SystemExit(ORPHANED_EXIT)
