"""One delivery's result: the attempt as recorded, and the completion that writes it.

A ``Completion`` carries the attempt (None when no request went out) and the
``Decision`` of what follows, guarded by the delivery number the claim gave
(the lease token, see ``job.py``). ``rescued`` decides for an attempt whose
worker died: counted, ``interrupted``, and retried or failed like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.job import JobRecord
from app.core.outcome import Classified, Outcome
from app.core.retry import Decision, Random, decide, policy_for
from app.core.target import TargetSpec

#: what an attempt cut off by csjd's own death records as its error
RESCUED_ERROR = "csjd stopped during the attempt; its lease was lost"


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    #: the job's delivery number this attempt was (the API's ``n``)
    delivery: int
    started_at: float
    finished_at: float
    duration_ms: float
    status_code: int | None
    outcome: Outcome
    error: str | None
    response_excerpt: str | None
    #: the answer's ``Content-Type`` and length (``Content-Length``, else the bytes read)
    content_type: str | None = None
    response_bytes: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """The result of one delivery, to be written if its lease still holds."""

    job_id: str
    target: str
    #: the delivery number the claim set: the lease token
    delivery: int
    decision: Decision
    #: None when no request was sent (the job expired before it could be).
    attempt: AttemptRecord | None
    now: float
    #: False when the claimed job goes back without a request being sent, so
    #: its delivery number is not used up.
    sent: bool = True
    #: a rescue's: written only if the lease still lapsed before this time
    lapsed_before: float | None = None


def rescued(
    job: JobRecord,
    target: TargetSpec | None,
    now: float,
    rng: Random,
    *,
    lapsed_before: float | None,
) -> Completion:
    """The completion of ``job``'s running delivery, whose worker is gone."""
    result = Classified(outcome=Outcome.INTERRUPTED, counted=True, error=RESCUED_ERROR)
    started = job.claimed_at or now
    return Completion(
        job_id=job.id,
        target=job.target,
        delivery=job.delivery,
        decision=decide(policy_for(job, target), job.attempts, result, now, rng),
        attempt=AttemptRecord(
            delivery=job.delivery,
            started_at=started,
            finished_at=now,
            duration_ms=max(0.0, (now - started) * 1000),
            status_code=None,
            outcome=Outcome.INTERRUPTED,
            error=RESCUED_ERROR,
            response_excerpt=None,
        ),
        now=now,
        lapsed_before=lapsed_before,
    )
