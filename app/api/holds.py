"""What holds jobs back, for the API's answers: ``app.core.hold`` fed from what is at hand.

A job's target comes from the dispatcher's copy when the dispatcher runs in
this process (no I/O, and the copy it obeys), else from the store; the breaker
and the rate limiter only the dispatcher knows, so a process that does not
deliver shows neither. Intake's answer takes only what is at hand
(``hold_at_hand``): its lane must not wait on another read.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.core.hold import NOT_HELD, UNSENT, Hold, hold_of
from app.core.job import JobRecord
from app.core.target import TargetRecord
from app.dispatch.loop import LiveState
from app.gateway import Gateway


def hold_at_hand(gateway: Gateway, job: JobRecord) -> Hold:
    """The job's hold from what the dispatcher holds in memory (nothing is read)."""
    if job.state not in UNSENT:
        return NOT_HELD
    dispatcher = gateway.dispatcher
    return hold_of(
        job,
        dispatcher.known_target(job.target),
        dispatcher.live_state(job.target),
        gateway.clock.now(),
    )


def holds_at_hand(gateway: Gateway, jobs: Sequence[JobRecord]) -> list[Hold]:
    """``hold_at_hand`` of each job, in order, for a batch's answer: each target's copy
    and live state are looked up once, and the clock read once."""
    dispatcher = gateway.dispatcher
    now = gateway.clock.now()
    at_hand: dict[str, tuple[TargetRecord | None, LiveState | None]] = {}
    out: list[Hold] = []
    for job in jobs:
        if job.state not in UNSENT:
            out.append(NOT_HELD)
            continue
        target = at_hand.get(job.target)
        if target is None:
            target = at_hand[job.target] = (
                dispatcher.known_target(job.target),
                dispatcher.live_state(job.target),
            )
        out.append(hold_of(job, target[0], target[1], now))
    return out


async def holds(gateway: Gateway, jobs: Sequence[JobRecord]) -> list[Hold]:
    """Each job's hold, in order: at most one read of targets, and none for jobs
    that are running or finished or whose target the dispatcher holds."""
    dispatcher = gateway.dispatcher
    known: dict[str, TargetRecord | None] = {}
    for job in jobs:
        if job.state in UNSENT and job.target not in known:
            known[job.target] = dispatcher.known_target(job.target)
    unread = [name for name, target in known.items() if target is None]
    if len(unread) == 1:
        known[unread[0]] = await gateway.store.get_target(unread[0])
    elif unread:
        known.update((t.name, t) for t in await gateway.store.list_targets() if t.name in known)
    now = gateway.clock.now()
    return [
        hold_of(job, known[job.target], dispatcher.live_state(job.target), now)
        if job.state in UNSENT
        else NOT_HELD
        for job in jobs
    ]
