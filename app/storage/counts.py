"""Per-target counts, kept by the writes that move jobs: what the dashboard reads.

Two counts per target, so that ``GET /targets`` and the dashboard cost the
same however many jobs are stored: the backlog (how many jobs are in each
unfinished state) and, per minute, how many jobs were accepted and how many
finished ``succeeded`` or ``failed`` (a job retried and finished again is
counted again: the minutes say what happened, not what the jobs are now).
``Tally`` is the arithmetic: what one move of one job does to them. The SQL
store sums a transaction's moves in one ``Tally`` and writes it at the end of
that transaction, one row per (target, state) and per (target, minute)
touched (``store.py``), so the counts change exactly when the jobs do; the
memory store keeps its counts in one ``Tally`` for good. Maintenance checks
the backlog against the jobs now and then and forgets old minutes
(``app/dispatch/maintenance.py``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from app.core.job import ACTIVE, JobState

MINUTE_S = 60
#: the finished states each minute counts, in the order of ``Tally.minutes``' lists
KINDS = ("accepted", "succeeded", "failed")
_COUNTED = {JobState.SUCCEEDED: 1, JobState.FAILED: 2}


def minute_of(ts: float) -> int:
    """The start of the minute ``ts`` falls in, in epoch seconds."""
    return int(ts // MINUTE_S) * MINUTE_S


@dataclass(slots=True)
class Tally:
    """Changes to the counts (or, summed from nothing, the counts themselves)."""

    #: (target, unfinished state) -> jobs
    backlog: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: (target, minute) -> [accepted, succeeded, failed]
    minutes: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.backlog.values()) or any(any(v) for v in self.minutes.values())

    def accepted(self, target: str, state: JobState, at: float, n: int = 1) -> None:
        """``n`` new jobs stored in ``state``, accepted at ``at``."""
        self.backlog[target, state.value] += n
        self._minute(target, at)[0] += n

    def moved(self, target: str, was: JobState, now: JobState, at: float, n: int = 1) -> None:
        """``n`` jobs moved from ``was`` to ``now`` at ``at``."""
        if was is now or n == 0:
            return
        if was in ACTIVE:
            self.backlog[target, was.value] -= n
        if now in ACTIVE:
            self.backlog[target, now.value] += n
        elif now in _COUNTED:
            self._minute(target, at)[_COUNTED[now]] += n

    def add(self, other: Tally) -> None:
        self.backlog.update(other.backlog)
        for key, counts in other.minutes.items():
            mine = self.minutes.setdefault(key, [0, 0, 0])
            for i, n in enumerate(counts):
                mine[i] += n

    def forget(self, target: str) -> None:
        """Every count of ``target`` (deleted)."""
        for key in [k for k in self.backlog if k[0] == target]:
            del self.backlog[key]
        for minute in [k for k in self.minutes if k[0] == target]:
            del self.minutes[minute]

    def backlog_rows(self) -> list[dict[str, Any]]:
        """The backlog's changes, one row per (target, state) changed, in key order:
        the order every writer takes these rows' locks in."""
        return [
            {"target": target, "state": state, "count": n}
            for (target, state), n in sorted(self.backlog.items())
            if n
        ]

    def minute_rows(self) -> list[dict[str, Any]]:
        """The minutes' changes, one row per (target, minute) changed, in key order."""
        return [
            {"target": target, "minute": minute, **dict(zip(KINDS, counts, strict=True))}
            for (target, minute), counts in sorted(self.minutes.items())
            if any(counts)
        ]

    def _minute(self, target: str, at: float) -> list[int]:
        return self.minutes.setdefault((target, minute_of(at)), [0, 0, 0])
