"""A target's standing as the log tells it: one event each time it changes.

``TargetLog.track`` is shown every copy of a target the dispatcher takes (read
from the database, or changed by an attempt's effects) and logs what changed
since the copy it last logged: disabled (with the reason; at INFO when an
operator did it, else WARNING), enabled, paused until. ``log_breaker`` logs
a breaker's transitions (opened, half-open, closed). No state but the last
copy of each target; no I/O but the log.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, datetime

from app.core import breaker as br
from app.core.target import DISABLED_BY_OPERATOR, TargetRecord
from app.dispatch.containment import BreakerEvent

log = logging.getLogger("csjd.dispatch")


def when(ts: float | None) -> str | None:
    """A time as the log shows it: RFC 3339, UTC, milliseconds."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TargetLog:
    def __init__(self) -> None:
        #: each target as its standing (enabled, paused) was last logged
        self._logged: dict[str, TargetRecord] = {}

    def track(self, target: TargetRecord, now: float, *, via: str) -> None:
        """Log how ``target``'s standing changed since it was last logged (a target
        seen for the first time has not changed). ``via``: ``attempt`` when this
        process's delivery caused it, ``reload`` when read from the database."""
        before = self._logged.get(target.name)
        self._logged[target.name] = target
        if before is None:
            return
        fields = {"target": target.name, "via": via}
        if before.spec.enabled and not target.spec.enabled:
            reason = target.disabled_reason
            level = logging.INFO if reason == DISABLED_BY_OPERATOR else logging.WARNING
            log.log(level, "target_disabled", extra={**fields, "reason": reason})
        elif target.spec.enabled and not before.spec.enabled:
            log.info("target_enabled", extra=fields)
        until = target.paused_until
        if until is not None and until > now and not (before.paused_until or 0.0) > now:
            log.warning("target_paused", extra={**fields, "until": when(until)})

    def keep_only(self, names: Collection[str]) -> None:
        """Forget the targets not among ``names`` (deleted)."""
        for name in [n for n in self._logged if n not in names]:
            del self._logged[name]


def log_breaker(target: str, event: BreakerEvent) -> None:
    b = event.breaker
    if b.state is br.BreakerState.OPEN:
        log.warning(
            "target_breaker_opened",
            extra={
                "target": target,
                "reason": b.reason,
                "until": when(b.reopens_at),
                "open_s": b.open_s,
            },
        )
    elif b.state is br.BreakerState.HALF_OPEN:
        log.info("target_breaker_half_open", extra={"target": target})
    else:
        log.info("target_breaker_closed", extra={"target": target})
