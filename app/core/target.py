"""Targets: what an operator configures, what csjd keeps of it, and how outcomes change it.

``TargetSpec`` declares a target's fields once; the API's schemas, the
targets file and the storage rows are derived from it (``SPEC_FIELDS``).
``effects`` is the one place that says what an attempt's decision does to its
target (a pause after throttling, a disable after ``410 Gone``): storage
writes it, the dispatcher applies it to the copy it holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.core.retry import Decision


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetSpec:
    """A target's configuration as an operator gives it."""

    name: str
    url: str
    timeout_s: float = 10.0
    max_concurrency: int = 16
    rate_limit_per_s: float | None = None
    max_attempts: int = 10
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 600.0
    max_retry_duration_s: float = 86400.0
    secret: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True


#: every field of ``TargetSpec`` but its name, in declaration order
SPEC_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TargetSpec))[1:]
#: the reason a target disabled by its operator carries
DISABLED_BY_OPERATOR = "disabled by an operator"


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetRecord:
    spec: TargetSpec
    disabled_reason: str | None
    paused_until: float | None
    created_at: float
    updated_at: float

    @property
    def name(self) -> str:
        return self.spec.name


def disabled_reason(spec: TargetSpec) -> str | None:
    """Why a target an operator has just put is disabled (None while it is enabled)."""
    return None if spec.enabled else DISABLED_BY_OPERATOR


@dataclass(frozen=True, slots=True, kw_only=True)
class Effects:
    """What one attempt's outcome does to its target."""

    #: no job of the target starts before then (a pause only ever grows)
    pause_until: float | None = None
    #: the target is disabled, for this reason
    disabled_reason: str | None = None


def effects(decision: Decision, status_code: int | None) -> Effects | None:
    """The target effects of ``decision``, or None when it has none."""
    if decision.pause_target_until is None and not decision.disable_target:
        return None
    return Effects(
        pause_until=decision.pause_target_until,
        disabled_reason=(
            f"the target answered {status_code} Gone" if decision.disable_target else None
        ),
    )


def with_effects(target: TargetRecord, change: Effects, now: float) -> TargetRecord:
    """``target`` after ``change``, as storage writes it."""
    if change.pause_until is not None and (
        target.paused_until is None or target.paused_until < change.pause_until
    ):
        target = dataclasses.replace(target, paused_until=change.pause_until)
    if change.disabled_reason is not None:
        target = dataclasses.replace(
            target,
            spec=dataclasses.replace(target.spec, enabled=False),
            disabled_reason=change.disabled_reason,
            updated_at=now,
        )
    return target
