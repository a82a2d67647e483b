"""The memory store's ordering lines: per (target, key), its unfinished jobs in order.

``MemoryJobStore._save`` tells ``Lines`` of every job that joins a line (new,
or retried after it finished) and of every job that leaves one (it ended);
``Lines`` answers what the joining job becomes (behind the head, unless it
leads) and which job leads next. What ``ordering_keys`` are is
``app/core/ordering.py``'s; the SQL store keeps the same lines in
``ordering_heads`` (``ordering.py``).
"""

from __future__ import annotations

from app.core import ordering
from app.core.job import JobRecord


class Lines:
    def __init__(self) -> None:
        #: (target, ordering key) -> the line's unfinished jobs in order, its head first
        self._lines: dict[tuple[str, str], list[str]] = {}
        #: a job behind its line's head -> the time it goes at the earliest once it leads
        self._not_before: dict[str, float] = {}

    def join(self, job: JobRecord) -> JobRecord:
        """``job`` (new, or retried) at the end of its line: behind, unless it leads."""
        assert job.ordering_key is not None
        line = self._lines.setdefault((job.target, job.ordering_key), [])
        line.append(job.id)
        if len(line) == 1:
            return job
        self._not_before[job.id] = job.next_attempt_at or job.updated_at
        return ordering.behind(job)

    def leave(self, job: JobRecord) -> tuple[str, float] | None:
        """``job`` ended and leaves its line; if it led and another waits, (that job's
        id, the time it goes at the earliest): it leads now."""
        assert job.ordering_key is not None
        key = (job.target, job.ordering_key)
        line = self._lines[key]
        led = line[0] == job.id
        line.remove(job.id)
        self._not_before.pop(job.id, None)
        if not line:
            del self._lines[key]
            return None
        if not led:
            return None
        return line[0], self._not_before.pop(line[0])
