"""How the pool of delivery slots (``CSJD_MAX_INFLIGHT``) is shared between targets.

Splitting only the slots free at a moment is not fair enough: a hung target
whose limit is as large as the pool takes its part of every slot that frees
up, and since its own never free, it ends up holding the whole pool while
other targets' due work waits. So the share here is of the whole pool,
counted against what each target already holds: free slots go to the
targets that hold the least (max-min fairness, "water-filling"), each up to
what it can use now. A target already above that level gets nothing more
until the others catch up or its own deliveries end; a target that alone
wants slots may take them all. ``split`` is the whole rule of one claim
round: targets known to have due work share the free slots first, and what
none of them can use goes to the targets whose last claim came back short
(they may have work again by now). Pure arithmetic on counts: the dispatcher
says how many attempts each target could start and which ones drained.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Split:
    """One claim round's shares."""

    #: target -> slots it may claim, in the order to claim them (none: absent)
    grants: dict[str, int]
    #: targets with due work given fewer slots than they could start, for others' sake
    wanting: set[str]


def split(
    free: int,
    rooms: Mapping[str, int],
    holding: Mapping[str, int],
    drained: Collection[str],
    *,
    turn: int,
) -> Split:
    """Share ``free`` slots among the targets in ``rooms``, each of which could
    start that many attempts now (none absent; all above 0).

    ``holding`` is what each has in flight now. Targets in ``drained`` had no
    more due work at their last claim: they get only the slots the others
    cannot use. ``turn`` rotates the order of ``rooms`` (ties go to the first
    targets in it), so a caller that moves it on each round spreads them.
    """
    names = list(rooms)
    if names:
        turn %= len(names)
        names = names[turn:] + names[:turn]
    due = {name: rooms[name] for name in names if name not in drained}
    given = grants(free, holding, due)
    wanting = {name for name in due if given.get(name, 0) < due[name]}
    left = free - sum(given.values())
    if left > 0:
        # nobody known to have work wants these: look at the others again
        # (a target that drained may have work by now)
        idle = {name: rooms[name] for name in names if name in drained}
        given.update(grants(left, holding, idle))
    return Split(given, wanting)


def grants(free: int, holding: Mapping[str, int], wants: Mapping[str, int]) -> dict[str, int]:
    """Share ``free`` slots among the targets in ``wants``; the slots each gets (none: absent).

    ``holding`` is what each target has in flight now (absent: none),
    ``wants`` how many more it could start now. Ties go to the targets in
    the order of ``wants``, so a caller that rotates that order spreads them.
    """
    names = [name for name, want in wants.items() if want > 0]
    if free <= 0 or not names:
        return {}
    held = {name: max(0, holding.get(name, 0)) for name in names}

    def filled(level: int) -> int:
        """Slots handed out if every target is raised to ``level`` (up to its want)."""
        return sum(min(max(0, level - held[n]), wants[n]) for n in names)

    top = max(held[n] + wants[n] for n in names)
    if filled(top) <= free:
        return {name: wants[name] for name in names}
    # the highest level the free slots reach: filled(low) <= free < filled(high)
    low, high = min(held.values()), top
    while high - low > 1:
        middle = (low + high) // 2
        if filled(middle) <= free:
            low = middle
        else:
            high = middle
    given = {n: min(max(0, low - held[n]), wants[n]) for n in names}
    # the slots left over are fewer than the targets that would reach the next
    # level, so each of the first few of those gets one
    left = free - filled(low)
    for name in names:
        if left <= 0:
            break
        if held[name] + given[name] == low and given[name] < wants[name]:
            given[name] += 1
            left -= 1
    return {name: n for name, n in given.items() if n > 0}
