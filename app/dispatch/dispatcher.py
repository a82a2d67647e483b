"""The dispatcher: claims due jobs, delivers them, records what happened.

One loop claims jobs in batches under a lease, only as many as there are free
slots (``CSJD_MAX_INFLIGHT`` overall) and as each target's ``TargetGuard``
admits (breaker, adaptive limit, rate), and starts one owned task per claimed
job at once, so claimed-but-not-started work is bounded by the free slots. A
delivery task builds the request, sends it through the ``Sender`` seam under
the target's hard deadline, classifies the answer, asks
``app.core.retry.decide`` what follows, and writes that through the store,
guarded by the lease. Nothing that happens inside one delivery can
stop the loop: any exception ends that attempt as retryable (the exception is
logged; the producer reads only that csjd failed). What a failure was in full,
the target's URL and addresses included, goes to the ``delivery`` log line and
nowhere else.

The loop sleeps until woken (a job was accepted, a slot freed, targets
changed) or until the next scheduled job, pause, breaker re-open or rate token
comes due, at most ``idle_poll_s``. A heartbeat extends the leases of running
attempts. Both loops run under the ``Supervisor``.
``stop`` stops claiming, lets in-flight deliveries finish for the drain
timeout, then cancels the rest; those are put back ``queued``, not counted.
It runs once: ``begin_stop`` starts it (and its clock) when the listener
closes, and the lifespan's ``stop`` waits for that same one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from app.core import answer
from app.core import breaker as br
from app.core.clock import Clock
from app.core.job import FailureReason, JobState
from app.core.outcome import (
    Classified,
    FailureKind,
    Outcome,
    classify_failure,
    classify_response,
)
from app.core.retry import Decision, Policy, Random, decide
from app.core.signing import sign
from app.dispatch.containment import TargetGuard
from app.dispatch.sender import USER_AGENT, Failure, Request, Response, Sender
from app.metrics import Metrics
from app.storage.base import AttemptRecord, ClaimRequest, Completion, JobRecord, TargetRecord
from app.storage.sql import SqlJobStore
from app.supervisor import Supervisor

log = logging.getLogger("csjd.dispatch")

#: the longest the loop sleeps without being woken; jobs accepted elsewhere wake
#: it (Postgres NOTIFY, or the API process's datagram on SQLite), so this only
#: bounds the cost of a lost wake-up
IDLE_POLL_S = 1.0
#: a claim's lease; running attempts have theirs extended every HEARTBEAT_S
LEASE_S = 30.0
HEARTBEAT_S = 10.0
TARGET_REFRESH_S = 2.0
LOOP_EXIT_TIMEOUT_S = 5.0
#: a retry over budget waits about this long (jittered) before it is due again
RETRY_DEFER_S = 1.0


@dataclass(frozen=True, slots=True)
class LiveState:
    breaker: str
    breaker_reopens_at: float | None
    concurrency_limit: int
    inflight: int


class Dispatcher:
    def __init__(
        self,
        store: SqlJobStore,
        sender: Sender,
        *,
        clock: Clock,
        rng: Random,
        metrics: Metrics,
        max_inflight: int,
        supervisor: Supervisor,
        idle_poll_s: float = IDLE_POLL_S,
    ) -> None:
        self._idle_poll_s = idle_poll_s
        self._store = store
        self._supervisor = supervisor
        self._sender = sender
        self._clock = clock
        self._rng = rng
        self._metrics = metrics
        self._max_inflight = max_inflight
        self._targets: dict[str, TargetRecord] = {}
        self._guards: dict[str, TargetGuard] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._targets_stale = True
        self._claiming = True
        #: job id -> lease token of every attempt this process is running
        self._leases: dict[str, int] = {}
        self._rotation = 0
        self._slot_bound = False
        self._refreshed_at = 0.0
        self._stopping: asyncio.Task[None] | None = None

    # -- control -------------------------------------------------------------

    async def start(self) -> None:
        await self._refresh_targets()
        self._supervisor.start("dispatcher", self._run)
        self._supervisor.start("heartbeat", self._heartbeat)

    def live_state(self, name: str) -> LiveState | None:
        """What containment says of a target right now (for the API)."""
        guard = self._guards.get(name)
        if guard is None:
            return None
        b = br.current(guard.breaker, self._clock.now())
        return LiveState(
            breaker=b.state.value,
            breaker_reopens_at=b.reopens_at if b.state is br.BreakerState.OPEN else None,
            concurrency_limit=guard.concurrency.limit,
            inflight=guard.inflight,
        )

    def wake(self) -> None:
        self._wake.set()

    def targets_changed(self) -> None:
        self._targets_stale = True
        self._wake.set()

    def stop_claiming(self) -> None:
        self._claiming = False
        self._wake.set()

    def begin_stop(self, drain_timeout_s: float) -> asyncio.Task[None]:
        """Start ``stop`` without waiting for it: the drain's clock starts now."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(
                self._stop(drain_timeout_s), name="csjd-dispatcher-stop"
            )
        return self._stopping

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop claiming; give deliveries ``drain_timeout_s``; cancel and requeue the rest.

        Once begun, a stop is not begun again: a later call waits for the same
        one, so the drain's clock is the first call's."""
        await self.begin_stop(drain_timeout_s)

    async def _stop(self, drain_timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout_s
        self.stop_claiming()
        # let the loop leave by itself: cancelling it mid-claim could commit a
        # claim whose jobs nobody starts (they would wait for a rescue); it
        # leaves within one claim, and its wait counts against the drain
        await self._supervisor.finish("dispatcher", LOOP_EXIT_TIMEOUT_S)
        if self._tasks:
            remaining = max(0.0, deadline - loop.time())
            _, pending = await asyncio.wait(set(self._tasks), timeout=remaining)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("drain_timeout", extra={"interrupted": len(pending)})
                await asyncio.gather(*pending, return_exceptions=True)
        await self._supervisor.stop("heartbeat")

    # -- the loop -------------------------------------------------------------

    async def _run(self) -> None:
        """The claim loop; an error ends it, and the supervisor restarts it."""
        while self._claiming:
            if await self._claim_round():
                continue  # a claim came back full: there may be more due work
            await self._sleep()

    async def _heartbeat(self) -> None:
        """Extend the leases of running attempts, so only a dead process's lapse."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if self._leases:
                await self._store.extend_leases(dict(self._leases), self._clock.now() + LEASE_S)

    async def _sleep(self) -> None:
        timeout = self._idle_poll_s
        now = self._clock.now()
        due = await self._store.next_due()
        if due is not None:
            timeout = min(timeout, max(0.0, due - now))
        for target in self._targets.values():
            if target.paused_until and target.paused_until > now:
                timeout = min(timeout, target.paused_until - now)
            wait = self._guards[target.name].wake_in(now)
            if wait is not None:
                timeout = min(timeout, max(0.0, wait))
        if timeout > 0:
            # asyncio.timeout, not wait_for: wait_for can swallow a cancellation
            # that arrives as the event is set (Python 3.11)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        self._wake.clear()

    async def _refresh_targets(self) -> None:
        self._targets_stale = False
        self._refreshed_at = time.monotonic()
        self._targets = {t.name: t for t in await self._store.list_targets()}
        now = self._clock.now()
        for name, target in self._targets.items():
            guard = self._guards.get(name)
            if guard is None:
                guard = self._guards[name] = TargetGuard(target.spec)
            guard.reconfigure(target.spec, now)
            self._publish(name, guard)
        for name in [n for n, g in self._guards.items() if n not in self._targets]:
            if self._guards[name].inflight == 0:
                del self._guards[name]

    def _publish(self, name: str, guard: TargetGuard) -> None:
        state = br.current(guard.breaker, self._clock.now()).state
        series = self._metrics.target(name)
        series.breaker_state.set(br.GAUGE[state])
        series.concurrency_limit.set(guard.concurrency.limit)

    async def _claim_round(self) -> bool:
        """Claim what can start now; True if a claim came back full (claim again).

        Only work that can start is claimed: the target is enabled and not
        paused, its breaker admits, it is below its adaptive limit and within
        its rate. Free slots are shared across targets in turn, so one slow or
        hung target holds at most its own limit and never delays the others.
        """
        if self._targets_stale or time.monotonic() - self._refreshed_at > TARGET_REFRESH_S:
            # other gateways on a shared database change targets and pauses too
            await self._refresh_targets()
        free = self._max_inflight - sum(g.inflight for g in self._guards.values())
        # Whether a finished delivery should wake the loop: only when slots, not
        # work, were what held claims back.
        self._slot_bound = free <= 0 or any(g.at_limit() for g in self._guards.values())
        if free <= 0:
            return False
        now = self._clock.now()
        rooms: dict[str, int] = {}
        for target in self._targets.values():
            if not target.spec.enabled or (target.paused_until and target.paused_until > now):
                continue
            room = self._guards[target.name].room(now)
            if room > 0:
                rooms[target.name] = room
        if not rooms:
            # scheduled jobs still come due while every target is busy
            await self._store.claim([], now, {})
            return False
        names = list(rooms)
        self._rotation = (self._rotation + 1) % len(names)
        names = names[self._rotation :] + names[: self._rotation]
        share = max(1, free // len(names))
        requests: list[ClaimRequest] = []
        for name in names:
            limit = min(rooms[name], share, free)
            if limit <= 0:
                break
            requests.append(ClaimRequest(target=name, limit=limit))
            free -= limit
        lease = dict.fromkeys((r.target for r in requests), LEASE_S)
        jobs = await self._store.claim(requests, now, lease)
        for job in jobs:
            self._admit(job, self._targets[job.target], now)
        claimed = Counter(job.target for job in jobs)
        full = any(claimed[r.target] >= r.limit for r in requests)
        self._slot_bound = self._slot_bound or full
        return full

    def _admit(self, job: JobRecord, target: TargetRecord, now: float) -> None:
        """Start a claimed job's delivery, or put it back if its retry is over budget."""
        guard = self._guards[target.name]
        guard.claimed(job.id, now)
        self._leases[job.id] = job.deliveries
        self._metrics.target(target.name).inflight.inc()
        if job.deliveries <= 1:
            guard.first_attempt(now)
        elif not guard.admit_retry(now):
            self._metrics.retries_deferred.labels(target=target.name, reason="budget").inc()
            delay = RETRY_DEFER_S * (0.5 + self._rng())
            decision = Decision(
                state=JobState.RETRYING, attempts=job.attempts, next_attempt_at=now + delay
            )
            self._spawn(job, target, self._put_back(job, target, decision, now))
            return
        self._spawn(job, target, self._deliver(job, target))

    def _spawn(self, job: JobRecord, target: TargetRecord, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"csjd-deliver-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put_back(
        self, job: JobRecord, target: TargetRecord, decision: Decision, now: float
    ) -> None:
        """A claimed job goes back unsent: no attempt, no request number used."""
        try:
            await self._record(job, decision, None, now, sent=False)
        finally:
            self._leases.pop(job.id, None)
            self._guards[target.name].unclaimed(job.id, now)
            self._metrics.target(target.name).inflight.dec()

    # -- one delivery -------------------------------------------------------------

    async def _deliver(self, job: JobRecord, target: TargetRecord) -> None:
        guard = self._guards[target.name]
        started = self._clock.now()
        result: Classified | None = None
        try:
            result = await self._attempt(job, target, started)
        finally:
            self._leases.pop(job.id, None)
            now = self._clock.now()
            if result is None:  # nothing sent, or cut off before an answer
                guard.unclaimed(job.id, now)
            else:
                guard.finished(job.id, started, result, now)
            self._publish(target.name, guard)
            self._metrics.target(target.name).inflight.dec()
            if self._slot_bound:
                self._wake.set()

    async def _attempt(
        self, job: JobRecord, target: TargetRecord, started: float
    ) -> Classified | None:
        """Send one attempt and record it; the result, or None if nothing was sent."""
        policy = Policy(
            max_attempts=job.max_attempts,
            backoff_initial_s=target.spec.backoff_initial_s,
            backoff_max_s=target.spec.backoff_max_s,
            expires_at=job.expires_at,
        )
        if job.expires_at <= started:
            decision = Decision(
                state=JobState.FAILED,
                attempts=job.attempts,
                next_attempt_at=None,
                failure_reason=FailureReason.EXPIRED,
            )
            await self._record(job, decision, None, started, sent=False)
            return None
        t0 = time.perf_counter()
        response: Response | None = None
        detail: str | None = None
        try:
            outcome = await self._send(job, target, started)
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
            await self._finish(job, target, policy, result, response, started, t0)
            raise
        except Exception as exc:
            log.exception("delivery_error", extra={"job_id": job.id, "target": target.name})
            # the exception's text is csjd's business, not the producer's
            detail = f"{type(exc).__name__}: {exc}"
            result = classify_failure(FailureKind.INTERNAL, timeout_s=target.spec.timeout_s)
        await self._finish(job, target, policy, result, response, started, t0, detail)
        return result

    async def _send(self, job: JobRecord, target: TargetRecord, now: float) -> Response | Failure:
        timestamp = int(now)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": job.id,
            "webhook-timestamp": str(timestamp),
        }
        if target.spec.secret:
            headers["webhook-signature"] = sign(target.spec.secret, job.id, timestamp, job.payload)
        headers["idempotency-key"] = job.id
        headers["csjd-attempt"] = str(job.deliveries)
        if target.spec.headers:
            _merge(headers, target.spec.headers)
        if job.headers:
            _merge(headers, job.headers)
        request = Request(
            url=target.spec.url, body=job.payload, headers=headers, timeout_s=target.spec.timeout_s
        )
        # the seam's contract: the sender answers within the request's deadline
        return await self._sender.send(request)

    async def _finish(
        self,
        job: JobRecord,
        target: TargetRecord,
        policy: Policy,
        result: Classified,
        response: Response | None,
        started: float,
        t0: float,
        detail: str | None = None,
    ) -> None:
        """Record the attempt and what follows; ``detail`` is the failure's full
        text, URL and addresses included, which only the log gets."""
        duration = time.perf_counter() - t0
        now = self._clock.now()
        decision = decide(policy, job.attempts, result, now, self._rng)
        attempt = AttemptRecord(
            n=job.deliveries,
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
        log.info(
            "delivery",
            extra={
                "job_id": job.id,
                "target": target.name,
                "attempt": job.deliveries,
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
            lease=job.deliveries,
            decision=decision,
            attempt=attempt,
            now=now,
            sent=sent,
        )
        try:
            written = await self._store.complete(completion)
        except Exception:
            # the lease brings the job back; nothing else to do from here
            log.exception("completion_write_failed", extra={"job_id": job.id})
            return
        if not written:
            log.warning("stale_attempt_ignored", extra={"job_id": job.id, "lease": job.deliveries})
            return
        self._apply_target_effects(job.target, decision)

    def _apply_target_effects(self, name: str, decision: Decision) -> None:
        target = self._targets.get(name)
        if target is None:
            return
        if decision.pause_target_until is not None:
            until = max(target.paused_until or 0.0, decision.pause_target_until)
            target = dataclasses.replace(target, paused_until=until)
        if decision.disable_target:
            target = dataclasses.replace(
                target, spec=dataclasses.replace(target.spec, enabled=False)
            )
            self._targets_stale = True
        self._targets[name] = target


def _merge(headers: dict[str, str], extra: Mapping[str, str]) -> None:
    """Add ``extra`` headers; a later name replaces an earlier one whatever its case."""
    for name, value in extra.items():
        lower = name.lower()
        for existing in [k for k in headers if k.lower() == lower]:
            del headers[existing]
        headers[name] = str(value)
