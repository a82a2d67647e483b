"""``MemoryJobStore``'s targets and their counts: kept in dicts and one ``Tally``.

The counterpart of the SQL store's targets (``sql.py``) and per-target counts
(``counts.py``) for the in-process store: the same records, the same refusal
of a delete while unfinished jobs send to (or call back) a target.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from app.core import errors
from app.core.job import JobRecord
from app.core.target import TargetRecord, TargetSpec
from app.storage import memory_writes as writes
from app.storage.base import Activity
from app.storage.counts import Tally


class MemoryTargets:
    """Targets for a store that keeps its jobs' counts in ``_counts``."""

    _targets: dict[str, TargetRecord]
    _counts: Tally

    def _unfinished(self) -> Iterable[JobRecord]:
        raise NotImplementedError  # the store's own

    async def put_target(self, spec: TargetSpec, now: float) -> tuple[TargetRecord, bool]:
        before = self._targets.get(spec.name)
        record = self._targets[spec.name] = writes.put(spec, before, now)
        return record, before is None

    async def replace_target(
        self, spec: TargetSpec, *, disabled_reason: str | None, seen: float, now: float
    ) -> TargetRecord | None:
        before = self._targets.get(spec.name)
        if before is None or before.updated_at != seen:
            return None
        record = replace(writes.put(spec, before, now), disabled_reason=disabled_reason)
        self._targets[spec.name] = record
        return record

    async def get_target(self, name: str) -> TargetRecord | None:
        return self._targets.get(name)

    async def list_targets(self) -> list[TargetRecord]:
        return [self._targets[name] for name in sorted(self._targets)]

    async def delete_target(self, name: str) -> None:
        if name not in self._targets:
            raise errors.NotFound(f"no target named '{name}'")
        busy = sum(job.target == name for job in self._unfinished())
        calling = sum(job.callback_target == name for job in self._unfinished())
        if calling and not busy:
            raise errors.Conflict(
                f"target '{name}' is the callback_target of {calling} unfinished jobs",
                extensions={"unfinished_jobs": calling},
            )
        if busy:
            raise errors.Conflict(
                f"target '{name}' still has {busy} unfinished jobs",
                extensions={"unfinished_jobs": busy},
            )
        del self._targets[name]
        self._counts.forget(name)

    async def backlog_by_target(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (target, state), n in self._counts.backlog.items():
            if n:
                out.setdefault(target, {})[state] = n
        return out

    async def activity(self, since: float, until: float) -> list[Activity]:
        return [
            Activity(target=target, minute=minute, accepted=a, succeeded=s, failed=f)
            for (target, minute), (a, s, f) in sorted(self._counts.minutes.items())
            if since <= minute < until
        ]

    async def repair_backlog(self) -> dict[tuple[str, str], int]:
        counted = Counter((job.target, job.state.value) for job in self._unfinished())
        kept = self._counts.backlog
        off = {key: n for key in counted.keys() | kept.keys() if (n := counted[key] - kept[key])}
        kept.update(off)
        return off

    async def forget_minutes(self, before: float) -> int:
        old = [key for key in self._counts.minutes if key[1] < before]
        for key in old:
            del self._counts.minutes[key]
        return len(old)
