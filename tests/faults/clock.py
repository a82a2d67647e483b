"""Skewed wall clocks for child processes, through Debian's libfaketime.

libfaketime is preloaded into the child (``LD_PRELOAD``) rather than run
through the ``faketime`` command, which forks and would keep signals meant for
the gateway from reaching it. ``FAKETIME="+60s"`` moves ``time.time()`` (and
everything built on ``CLOCK_REALTIME``) by the skew. Left alone it also moves
``CLOCK_MONOTONIC``, to about the epoch: asyncio still works, but durations a
process measures across its own start would be nonsense, and no real clock
skew looks like that. ``FAKETIME_DONT_FAKE_MONOTONIC=1`` keeps the monotonic
clock, and so every asyncio timer, true.
"""

from __future__ import annotations

import glob
import os

from tests.needs import missing

#: the multithreaded build: the gateway runs SQLite and DNS in threads
_LIBRARY_PATTERNS = (
    "/usr/lib/*/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
)


def libfaketime() -> str | None:
    for pattern in _LIBRARY_PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def require_faketime() -> str:
    """The library's path; skips the test without it (fails under ``CI=true``)."""
    path = libfaketime()
    if path is None:
        missing(
            "libfaketime is not installed (Debian: apt-get install faketime)",
            in_ci="the clock-skew tests must run",
        )
    return path


def faketime_env(skew_s: int) -> dict[str, str]:
    """Environment for a child whose wall clock reads ``skew_s`` seconds off (±)."""
    library = require_faketime()
    preload = os.environ.get("LD_PRELOAD")
    return {
        "LD_PRELOAD": f"{library}:{preload}" if preload else library,
        "FAKETIME": f"{skew_s:+d}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
