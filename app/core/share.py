"""How the pool of delivery slots (``CSJD_MAX_INFLIGHT``) is shared between targets.

Splitting only the slots free at a moment is not fair enough: a hung target
whose limit is as large as the pool takes its part of every slot that frees
up, and since its own never free, it ends up holding the whole pool while
other targets' due work waits. So the share here is of the whole pool,
counted against what each target already holds: free slots go to the
targets that hold the least (max-min fairness, "water-filling"), each up to
what it can use now. A target already above that level gets nothing more
until the others catch up or its own deliveries end; a target that alone
wants slots may take them all. Pure arithmetic on counts: the dispatcher
decides which targets want slots and how many each could use.
"""

from __future__ import annotations

from collections.abc import Mapping


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
