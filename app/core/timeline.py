"""A job's story, told from what the API answers: when it was accepted, each attempt, how it ended.

csjd keeps no table of state changes; the job and its attempts already hold
every time that matters. ``timeline`` reads them as ``GET /jobs/{id}`` and
``GET /jobs/{id}/attempts`` answer them (dicts with RFC 3339 strings), so the
CLI, which only has those answers, and the dashboard, which renders the same
shapes, tell one story in the same words. It is pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: what the next step of a job that is not finished is called, by its state
_WAITING = {
    "scheduled": "due",
    "queued": "due",
    "retrying": "next attempt",
}
#: why a job waits, in words, by its ``held_by``
HELD = {
    "breaker": "the target's circuit breaker is open",
    "pause": "the target asked for a pause (429/503 Retry-After)",
    "disabled": "the target is disabled",
    "rate": "the target's rate limit",
    "ordering": "an earlier job with the same ordering key",
    "schedule": "not due yet",
}


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the story: when (RFC 3339, or ``None`` for "not known"), what, and any detail."""

    at: str | None
    what: str
    detail: str = ""
    #: ``ok``, ``bad``, ``wait`` or ``""``: how a view may colour it
    tone: str = ""


def _answer(attempt: Mapping[str, Any]) -> tuple[str, str]:
    status = attempt.get("status_code")
    error = attempt.get("error")
    outcome = str(attempt.get("outcome") or "")
    said = f"HTTP {status}" if status is not None else (error or "no answer")
    # the gateway's own error for an answered attempt is its status again: said once
    if status is not None and error and error != said:
        said = f"{said}: {error}"
    duration = attempt.get("duration_ms")
    took = f" in {_ms(duration)}" if isinstance(duration, int | float) else ""
    tone = "ok" if outcome == "success" else ("wait" if outcome == "throttled" else "bad")
    if outcome in ("", "interrupted"):
        tone = "wait"
    return f"{said}{took}" + (f" ({outcome})" if outcome else ""), tone


def _ms(duration: float) -> str:
    """``15 ms``, ``2.5 ms``: a millisecond's fraction matters only below ten."""
    return f"{duration:.1f} ms" if duration < 10 else f"{duration:.0f} ms"


def timeline(job: Mapping[str, Any], attempts: Sequence[Mapping[str, Any]]) -> list[Event]:
    """Every event of ``job`` in time order, then where it stands now (its state, why it waits)."""
    events = [
        Event(job.get("created_at"), "accepted", f"idempotency key {job.get('idempotency_key')}")
    ]
    for attempt in attempts:
        n = attempt.get("n")
        events.append(Event(attempt.get("started_at"), f"attempt {n} sent"))
        if attempt.get("finished_at") is not None:
            detail, tone = _answer(attempt)
            events.append(Event(attempt.get("finished_at"), f"attempt {n} answered", detail, tone))
    # RFC 3339 UTC strings of one width sort as times
    events.sort(key=lambda e: str(e.at or ""))
    return [*events, _now(job)]


def _now(job: Mapping[str, Any]) -> Event:
    state = str(job.get("state"))
    if state == "succeeded":
        return Event(job.get("completed_at"), "succeeded", "", "ok")
    if state in ("failed", "cancelled"):
        return Event(job.get("completed_at"), state, str(job.get("failure_reason") or ""), "bad")
    if state == "running":
        return Event(None, "running", "an attempt is in flight", "wait")
    reason = why_held(job)
    return Event(
        job.get("next_attempt_at"),
        f"{state}, {_WAITING.get(state, 'due')}",
        f"held: {reason}" if reason else "",
        "wait",
    )


def why_held(job: Mapping[str, Any]) -> str:
    """What holds a job back from being sent now, in words, and until when if known;
    ``""`` when nothing does (``held_by`` is null)."""
    held_by = job.get("held_by")
    if not held_by:
        return ""
    words = HELD.get(str(held_by), str(held_by))
    until = job.get("held_until")
    return f"{words} until {until}" if until else words
