"""One delivery of a claimed job: request, send, classify, decide, write.

``Deliverer.attempt`` begins the attempt's span (``app/tracing.py``), builds
the request (``app.core.request.request_for``; it carries the span's
``traceparent``), sends it through the ``Sender`` seam under the target's hard
deadline, classifies the answer, asks ``app.core.retry.decide`` what follows,
and writes that through the store, guarded by the lease; a result the database
cannot take yet is kept and written again until it lands. Nothing that happens
inside one delivery can stop the loop: any exception ends that attempt as
retryable (the exception is logged; the producer reads only that csjd
failed). What a failure was in full, the target's URL and addresses
included, goes to the ``delivery`` log line and nowhere else; that line is a
warning when the attempt failed (retryable or permanent: an error answer, a
timeout, a refused connection), and a job that ends ``failed`` by any path
through here logs ``job_failed``, a warning too. The books
around a delivery (its slot, its lease, its target's guard) are the loop's
(``loop.py``); a written result's effects on its target (a pause, a disable)
are handed back to it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from app.core import answer
from app.core.attempt import AttemptRecord, Completion
from app.core.clock import Clock
from app.core.errors import DatabaseUnavailable, RefusedByDatabase
from app.core.job import JobRecord, JobState
from app.core.outcome import (
    Classified,
    FailureKind,
    Outcome,
    classify_failure,
    classify_response,
)
from app.core.request import request_for
from app.core.retry import Decision, Policy, Random, decide, expired_before_sending, policy_for
from app.core.target import Effects, TargetRecord, effects
from app.dispatch.sender import Response, Sender
from app.dispatch.timings import DEFAULT as DEFAULT_TIMINGS
from app.dispatch.timings import Timings
from app.metrics import Metrics
from app.storage.base import JobStore
from app.tracing import UNTRACED, AttemptSpan, Tracing

log = logging.getLogger("csjd.dispatch")

#: what the loop does with a written result's effects on its target (name, change, now)
OnEffects = Callable[[str, Effects, float], None]
#: the ``delivery`` line's level for an attempt that failed; any other is INFO (a
#: throttle is the target asking for time, an interruption csjd's own stop)
_FAILED_LEVEL = {Outcome.RETRYABLE: logging.WARNING, Outcome.PERMANENT: logging.WARNING}


class Deliverer:
    """Carries out deliveries for one dispatcher; one instance serves them all."""

    def __init__(
        self,
        store: JobStore,
        sender: Sender,
        *,
        clock: Clock,
        rng: Random,
        metrics: Metrics,
        on_effects: OnEffects,
        timings: Timings = DEFAULT_TIMINGS,
        tracing: Tracing = UNTRACED,
    ) -> None:
        self._store = store
        self._sender = sender
        self._tracing = tracing
        self._clock = clock
        self._rng = rng
        self._metrics = metrics
        self._on_effects = on_effects
        self._timings = timings

    async def attempt(
        self, job: JobRecord, target: TargetRecord, started: float
    ) -> Classified | None:
        """Send one attempt and record it; the result, or None if nothing was sent."""
        policy = policy_for(job, target.spec)
        expired = expired_before_sending(job, started)
        if expired is not None:
            await self._record(job, expired, None, started, sent=False)
            return None
        span = self._tracing.attempt(job, target.name)
        t0 = time.perf_counter()
        response: Response | None = None
        detail: str | None = None
        try:
            request = request_for(job, target.spec, started, traceparent=span.traceparent)
            # the seam's contract: the sender answers within the request's deadline
            outcome = await self._sender.send(request)
            if isinstance(outcome, Response):
                response = outcome
                result = classify_response(
                    outcome.status, outcome.headers.get("Retry-After"), self._clock.now()
                )
            else:
                detail = outcome.message
                result = classify_failure(outcome.kind, timeout_s=target.spec.timeout_s)
        except asyncio.CancelledError:
            # drain ran out: put the job back without counting the attempt
            result = Classified(
                outcome=Outcome.INTERRUPTED,
                counted=False,
                error="csjd stopped during the attempt (drain)",
            )
            await self._finish(job, target, policy, result, response, started, t0, span)
            raise
        except Exception as exc:
            log.exception("delivery_error", extra={"job_id": job.id, "target": target.name})
            # the exception's text is csjd's business, not the producer's
            detail = f"{type(exc).__name__}: {exc}"
            result = classify_failure(FailureKind.INTERNAL, timeout_s=target.spec.timeout_s)
        await self._finish(job, target, policy, result, response, started, t0, span, detail)
        return result

    async def put_back(self, job: JobRecord, decision: Decision, now: float) -> None:
        """A claimed job goes back unsent: no attempt, no request number used."""
        await self._record(job, decision, None, now, sent=False)

    async def _finish(
        self,
        job: JobRecord,
        target: TargetRecord,
        policy: Policy,
        result: Classified,
        response: Response | None,
        started: float,
        t0: float,
        span: AttemptSpan,
        detail: str | None = None,
    ) -> None:
        """Record the attempt and what follows; ``detail`` is the failure's full
        text, URL and addresses included, which only the log gets (the span
        gets what the producer reads)."""
        duration = time.perf_counter() - t0
        span.ended(result)
        now = self._clock.now()
        decision = decide(policy, job.attempts, result, now, self._rng)
        attempt = AttemptRecord(
            delivery=job.delivery,
            started_at=started,
            finished_at=now,
            duration_ms=round(duration * 1000, 3),
            status_code=result.status_code,
            outcome=result.outcome,
            error=result.error,
            response_excerpt=answer.excerpt(response.body) if response else None,
            content_type=answer.media_type(response.headers) if response else None,
            response_bytes=answer.length(response.headers, response.body) if response else None,
        )
        self._metrics.target(target.name).delivered(result.outcome.value, duration)
        log.log(
            _FAILED_LEVEL.get(result.outcome, logging.INFO),
            "delivery",
            extra={
                "job_id": job.id,
                "target": target.name,
                "attempt": job.delivery,
                "outcome": result.outcome.value,
                "status_code": result.status_code,
                "duration_ms": attempt.duration_ms,
                "state": decision.state.value,
                **({"error": result.error} if result.error and not response else {}),
                **({"detail": detail} if detail else {}),
            },
        )
        await self._record(job, decision, attempt, now)

    async def _record(
        self,
        job: JobRecord,
        decision: Decision,
        attempt: AttemptRecord | None,
        now: float,
        *,
        sent: bool = True,
    ) -> None:
        completion = Completion(
            job_id=job.id,
            target=job.target,
            delivery=job.delivery,
            decision=decision,
            attempt=attempt,
            now=now,
            sent=sent,
        )
        written = await self._write(completion)
        if written is None:
            return
        if not written:
            log.warning("stale_attempt_ignored", extra={"job_id": job.id, "delivery": job.delivery})
            return
        if decision.state is JobState.FAILED:
            log.warning(
                "job_failed",
                extra={
                    "job_id": job.id,
                    "target": job.target,
                    "failure_reason": decision.failure_reason.value
                    if decision.failure_reason
                    else None,
                    "attempts": decision.attempts,
                },
            )
        change = effects(decision, attempt.status_code if attempt else None)
        if change is not None:
            self._on_effects(job.target, change, now)

    async def _write(self, completion: Completion) -> bool | None:
        """Write an attempt's result until it lands (True) or the store says the lease
        is no longer this attempt's (False: rescued, or written by an earlier try
        whose answer was lost). While the database is out of reach the result is
        kept and the write tried again, and the heartbeat keeps the lease; only a
        write the store refuses outright is given up (None), to the lease."""
        backoff = self._timings.write_retry_first_s
        while True:
            try:
                return await self._store.complete(completion)
            except DatabaseUnavailable:
                log.warning(
                    "completion_write_deferred",
                    extra={"job_id": completion.job_id, "retry_in_s": backoff},
                )
            except RefusedByDatabase:
                if completion.attempt is None or completion.attempt.response_excerpt is None:
                    log.exception("completion_refused", extra={"job_id": completion.job_id})
                    return None
                # what the target sent is the only text from outside: keep the result
                # without it rather than leave a known answer to the lease
                log.warning(
                    "completion_refused_answer_dropped", extra={"job_id": completion.job_id}
                )
                bare = dataclasses.replace(
                    completion.attempt, response_excerpt=None, content_type=None
                )
                completion = dataclasses.replace(completion, attempt=bare)
                continue
            except Exception:
                log.exception("completion_write_failed", extra={"job_id": completion.job_id})
                return None
            await asyncio.sleep(backoff)
            backoff = min(self._timings.write_retry_max_s, backoff * 2)
