"""Time as a dependency: the core and dispatcher ask a ``Clock``, never ``time``."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (what is stored)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()
