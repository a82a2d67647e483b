"""The claim loop: claims due jobs under a lease and starts one delivery per job.

One loop claims jobs in batches under a lease, only as many as there are free
slots (``CSJD_MAX_INFLIGHT`` overall) and as each target's ``TargetGuard``
admits (breaker, adaptive limit, rate, and no more retries than its retry
budget lets start), and starts one owned task per claimed job at once, so
claimed-but-not-started work is bounded by the free slots and nothing is
claimed only to be put back. Free slots go to targets by their share of the
whole pool (``app.core.share.split``), so a hung target holds at most its
share while others have due work. What one delivery does is ``delivery.py``'s;
the loop keeps the books around it (slots, leases, guards, the targets it
holds). It sleeps until woken (a job was accepted, a slot freed, targets
changed) or until the next scheduled job, pause, breaker re-open, rate token
or retry budget comes due, at most ``idle_poll_s``; a heartbeat extends the
leases of running attempts (``leases.py``); both loops run under the ``Supervisor``.
``stop`` stops claiming, lets in-flight deliveries finish for the drain
timeout, then cancels the rest, which are put back ``queued``, not counted.
It runs once: ``begin_stop`` starts it (and its clock) when the listener
closes, and the lifespan's ``stop`` waits for that same one. Each target's
changes of standing are logged once as the loop sees them (``target_log.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from app.core import breaker as br
from app.core import limits, share
from app.core.clock import Clock
from app.core.errors import DatabaseUnavailable
from app.core.job import JobRecord
from app.core.outcome import Classified
from app.core.retry import Decision, Random, deferred
from app.core.target import Effects, TargetRecord, with_effects
from app.dispatch.containment import DEFAULT as DEFAULT_CONTAINMENT
from app.dispatch.containment import Containment, TargetGuard
from app.dispatch.delivery import Deliverer
from app.dispatch.leases import Leases
from app.dispatch.sender import Sender
from app.dispatch.target_log import TargetLog, log_breaker
from app.dispatch.timings import DEFAULT as DEFAULT_TIMINGS
from app.dispatch.timings import Timings
from app.metrics import Metrics
from app.storage.base import ClaimRequest, JobStore
from app.supervisor import Supervisor
from app.tracing import UNTRACED, Tracing

log = logging.getLogger("csjd.dispatch")


@dataclass(frozen=True, slots=True)
class LiveState:
    breaker: str
    #: while the breaker is open (and only then): when it half-opens and lets
    #: the next probe through
    breaker_reopens_at: float | None
    concurrency_limit: int
    inflight: int
    #: when the rate limit frees its next token, while it has none now
    rate_free_at: float | None = None


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        sender: Sender,
        *,
        clock: Clock,
        rng: Random,
        metrics: Metrics,
        max_inflight: int,
        tracing: Tracing = UNTRACED,
        supervisor: Supervisor,
        timings: Timings = DEFAULT_TIMINGS,
        containment: Containment = DEFAULT_CONTAINMENT,
    ) -> None:
        self._timings = timings
        self._containment = containment
        self._store = store
        self._supervisor = supervisor
        self._clock = clock
        self._rng = rng
        self._metrics = metrics
        self._max_inflight = max_inflight
        self._targets: dict[str, TargetRecord] = {}
        self._target_log = TargetLog()
        #: targets an attempt's effects changed while the targets were being read
        self._affected: set[str] = set()
        self._guards: dict[str, TargetGuard] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._targets_stale = True
        self._claiming = True
        self._leases = Leases(store, self._clock, self._timings)
        self._rotation = 0
        self._slot_bound = False
        self._refreshed_at = 0.0
        #: target -> when (monotonic) its last claim came back short: it had no
        #: more due work then, so it does not hold others to their share
        self._drained: dict[str, float] = {}
        #: when the next scheduled job or retry comes due, as last read
        self._next_due: float | None = None
        #: the same, as the last claim round read it, and whether it is that round's
        self._due_seen: float | None = None
        self._due_fresh = False
        self._stopping: asyncio.Task[None] | None = None
        self._deliverer = Deliverer(
            store,
            sender,
            tracing=tracing,
            clock=clock,
            rng=rng,
            metrics=metrics,
            on_effects=self._apply,
            timings=timings,
        )

    # -- control -------------------------------------------------------------

    async def start(self) -> None:
        await self._refresh_targets()
        self._supervisor.start("dispatcher", self._run)
        self._supervisor.start("heartbeat", self._leases.heartbeat)

    def live_state(self, name: str) -> LiveState | None:
        """What containment says of a target right now (for the API)."""
        guard = self._guards.get(name)
        if guard is None:
            return None
        now = self._clock.now()
        b = br.current(guard.breaker, now)
        rate_free_at = None
        if guard.bucket is not None and limits.available(guard.bucket, now) < 1:
            rate_free_at = now + limits.next_token_in(guard.bucket, now)
        return LiveState(
            breaker=b.state.value,
            breaker_reopens_at=b.reopens_at if b.state is br.BreakerState.OPEN else None,
            concurrency_limit=guard.concurrency.limit,
            inflight=guard.inflight,
            rate_free_at=rate_free_at,
        )

    def known_target(self, name: str) -> TargetRecord | None:
        """The target as this dispatcher last read it (None before it has, or when it
        does not run here): its pause and whether it is enabled, with no I/O."""
        return self._targets.get(name)

    @property
    def inflight(self) -> int:
        """Deliveries (and put-backs) this process runs now."""
        return len(self._tasks)

    def wake(self) -> None:
        """Jobs may have come due (accepted, retried, put back): look for them."""
        self._drained.clear()  # whose, the wake does not say
        self._wake.set()

    def targets_changed(self) -> None:
        self._targets_stale = True
        self._drained.clear()
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
        await self._supervisor.finish("dispatcher", self._timings.loop_exit_timeout_s)
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
        """The claim loop; an error ends it, and the supervisor restarts it. A database
        out of reach is not an error here: the loop waits a moment and claims again."""
        while self._claiming:
            try:
                if await self._claim_round():
                    continue  # a claim came back full: there may be more due work
                await self._sleep()
            except DatabaseUnavailable:
                pause = self._timings.unavailable_pause_s
                log.warning("claim_deferred", extra={"retry_in_s": pause})
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        while self._claiming:
                            await self._wake.wait()
                            self._wake.clear()

    async def _sleep(self) -> None:
        timeout = self._timings.idle_poll_s
        now = self._clock.now()
        # the claim round just before read it in its own transaction; a round
        # that claimed nothing (no free slot) did not
        due = self._due_seen if self._due_fresh else await self._store.next_due()
        self._next_due, self._due_fresh = due, False
        if due is not None:
            timeout = min(timeout, max(0.0, due - now))
        for target in self._targets.values():
            if target.paused_until and target.paused_until > now:
                timeout = min(timeout, target.paused_until - now)
            wait = self._guards[target.name].wake_in(now)
            if wait is not None:
                timeout = min(timeout, max(0.0, wait))
        woken = False
        if timeout > 0:
            # asyncio.timeout, not wait_for: wait_for can swallow a cancellation
            # that arrives as the event is set (Python 3.11)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    woken = await self._wake.wait()
        self._wake.clear()
        if not woken:
            # a scheduled job or retry came due, or another process moved jobs:
            # any target may have due work again
            self._drained.clear()
        # Other processes make jobs due without waking this one, and a loop kept
        # busy by finished deliveries never times out: a mark lasts one idle poll,
        # the longest the loop goes without looking anyway. (Only here, between
        # rounds, so claiming again at once always sees the marks just made.)
        oldest = time.monotonic() - self._timings.idle_poll_s
        for name in [n for n, at in self._drained.items() if at < oldest]:
            del self._drained[name]

    async def _refresh_targets(self) -> None:
        self._targets_stale = False
        self._refreshed_at = time.monotonic()
        self._affected.clear()
        rows = await self._store.list_targets()
        held, self._targets = self._targets, {}
        now = self._clock.now()
        for target in rows:
            if target.name in self._affected and target.name in held:
                # the row may predate an effect applied (and logged) meanwhile:
                # keep the copy that has it, and read again next round
                self._targets[target.name] = held[target.name]
                self._targets_stale = True
                continue
            self._targets[target.name] = target
            self._target_log.track(target, now, via="reload")
        self._target_log.keep_only(self._targets)
        for name, target in self._targets.items():
            guard = self._guards.get(name)
            if guard is None:
                guard = self._guards[name] = TargetGuard(target.spec, policy=self._containment)
            guard.reconfigure(target.spec, now)
            self._publish(name, guard)
        for name in [n for n, g in self._guards.items() if n not in self._targets]:
            if self._guards[name].inflight == 0:
                del self._guards[name]
                # a deleted target's series go, so /metrics names only targets that exist
                self._metrics.forget_target(name)

    def _publish(self, name: str, guard: TargetGuard) -> None:
        now = self._clock.now()
        guard.observe(now)
        for event in guard.take_events():
            log_breaker(name, event)
        state = br.current(guard.breaker, now).state
        series = self._metrics.target(name)
        series.breaker_state.set(br.GAUGE[state])
        series.concurrency_limit.set(guard.concurrency.limit)

    async def _claim_round(self) -> bool:
        """Claim what can start now; True if the loop should claim again at once.

        Only work that can start is claimed: the target is enabled and not
        paused, its breaker admits, it is below its adaptive limit and within
        its rate. Free slots go to the targets with due work by their share of
        the whole pool, counted against what each already holds, so a slow or
        hung target never takes the slots other targets' due work needs; slots
        none of those can use go to the rest (a target alone may use them all).
        """
        refresh_s = self._timings.target_refresh_s
        if self._targets_stale or time.monotonic() - self._refreshed_at > refresh_s:
            # other gateways on a shared database change targets and pauses too
            await self._refresh_targets()
        seen_at = self._clock.now()
        for name, guard in self._guards.items():
            if guard.observe(seen_at):  # time half-opened its breaker
                self._publish(name, guard)
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
                rooms[target.name] = min(room, free)
        if not rooms:
            # scheduled jobs still come due while every target is busy
            self._due_seen = (await self._store.claim_round([], now, {})).next_due
            self._due_fresh = True
            return False
        self._rotation = (self._rotation + 1) % len(rooms)
        if self._next_due is not None and now >= self._next_due:
            # this claim makes some target's scheduled jobs or retries due
            self._next_due = None
            self._drained.clear()
        holding = {name: self._guards[name].inflight for name in rooms}
        shares = share.split(free, rooms, holding, self._drained, turn=self._rotation)
        # no more retries than the budget lets start: the rest wait in the queue,
        # unclaimed, and first attempts behind them still go
        requests = [
            ClaimRequest(target=name, limit=n, retries=min(n, self._guards[name].retry_room(now)))
            for name, n in shares.grants.items()
        ]
        lease = dict.fromkeys((r.target for r in requests), self._timings.lease_s)
        claim = await self._store.claim_round(requests, now, lease)
        jobs, self._due_seen, self._due_fresh = claim.jobs, claim.next_due, True
        for job in jobs:
            self._admit(job, self._targets[job.target], now)
        claimed = Counter(job.target for job in jobs)
        retried = Counter(job.target for job in jobs if job.delivery > 1)
        full = False
        short: set[str] = set()
        marked = time.monotonic()
        for r in requests:
            if claimed[r.target] >= r.limit:
                full = True
                self._drained.pop(r.target, None)
                continue
            # short: no more due work that can start now
            short.add(r.target)
            self._drained[r.target] = marked
            if r.retries is not None and r.retries < r.limit and retried[r.target] == r.retries:
                # the budget, not a lack of work, may have ended this claim
                self._metrics.retries_deferred.labels(target=r.target, reason="budget").inc()
        self._slot_bound = self._slot_bound or full or bool(shares.wanting)
        # slots held for targets that had less work than their share can go to
        # the ones held back for them, at once
        return full or bool(short and shares.wanting - short)

    def _admit(self, job: JobRecord, target: TargetRecord, now: float) -> None:
        """Start a claimed job's delivery, or put it back if its retry is over budget."""
        guard = self._guards[target.name]
        self._leases.hold(job.id, job.delivery)
        self._metrics.target(target.name).inflight.inc()
        # (the claim set deliveries to this request's number: above 1, a retry)
        if guard.start(job.id, retry=job.delivery > 1, now=now):
            self._spawn(job, self._deliver(job, target))
            return
        # The claim asked for no more retries than the budget allows, so this
        # is a store that ignored the bound: the retry waits, never dropped.
        guard.hold()
        self._metrics.retries_deferred.labels(target=target.name, reason="budget").inc()
        self._spawn(job, self._put_back(job, target, deferred(job, now, self._rng), now))

    def _spawn(self, job: JobRecord, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"csjd-deliver-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put_back(
        self, job: JobRecord, target: TargetRecord, decision: Decision, now: float
    ) -> None:
        """A claimed job goes back unsent: no attempt, no request number used."""
        try:
            await self._deliverer.put_back(job, decision, now)
        finally:
            self._leases.release(job.id)
            self._guards[target.name].release()
            self._metrics.target(target.name).inflight.dec()
            if self._slot_bound:
                self._wake.set()

    # -- around one delivery ---------------------------------------------------

    async def _deliver(self, job: JobRecord, target: TargetRecord) -> None:
        """One delivery's task: the attempt, then its slot, lease and guard given back."""
        guard = self._guards[target.name]
        started = self._clock.now()
        result: Classified | None = None
        try:
            result = await self._deliverer.attempt(job, target, started)
        finally:
            self._leases.release(job.id)
            now = self._clock.now()
            if result is None:  # nothing sent, or cut off before an answer
                guard.unclaimed(job.id, now)
            else:
                guard.finished(job.id, started, result, now)
            self._publish(target.name, guard)
            self._metrics.target(target.name).inflight.dec()
            if self._slot_bound:
                self._wake.set()

    def _apply(self, name: str, change: Effects, now: float) -> None:
        """A written result's effects on its target, on the copy this loop holds
        until it reads the targets again."""
        target = self._targets.get(name)
        if target is not None:
            self._affected.add(name)
            self._targets[name] = changed = with_effects(target, change, now)
            self._target_log.track(changed, now, via="attempt")
            if change.disabled_reason is not None:
                self._targets_stale = True
