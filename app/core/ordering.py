"""Ordering keys: a target's jobs with one key go one at a time, in the order accepted.

The jobs of one target that share an ordering key form a line. Its head is the
one job of the line that may be sent: it is stored, scheduled, retried and held
by its target as any job is. The jobs behind it wait ``scheduled`` with no time
(``next_attempt_at`` None), which nothing promotes or claims, so the claim of
every other job is the same statement as without keys. When the head becomes
terminal (succeeded, failed or cancelled, by an attempt, an expiry or an
operator) the store makes the next job of the line its head in the same
transaction, at that job's own time if it has not come yet (``released``). A
finished job an operator retries joins the end of its line again.

What a job becomes is decided here; the store keeps the lines
(``app/storage/ordering.py`` on SQL, ``memory.py`` in memory).
"""

from __future__ import annotations

from dataclasses import replace

from app.core.job import JobRecord, JobState

#: an ordering key's longest length, in characters
MAX_KEY_CHARS = 200


def behind(job: JobRecord) -> JobRecord:
    """``job`` waiting behind its line's head."""
    return replace(job, state=JobState.SCHEDULED, next_attempt_at=None)


def is_behind(job: JobRecord) -> bool:
    """Whether ``job`` waits behind the head of its line."""
    return (
        job.ordering_key is not None
        and job.state is JobState.SCHEDULED
        and job.next_attempt_at is None
    )


def released(job: JobRecord, not_before: float, now: float) -> JobRecord:
    """``job`` made its line's head at ``now``; it goes at ``not_before`` at the earliest
    (the time it was given when it was accepted, or retried)."""
    due = max(not_before, now)
    state = JobState.SCHEDULED if due > now else JobState.QUEUED
    return replace(job, state=state, next_attempt_at=due, updated_at=now)
