"""Sharing the pool of delivery slots between targets: pure counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.core.share import grants


def test_a_target_alone_may_take_every_free_slot() -> None:
    assert grants(8, {}, {"hung": 100}) == {"hung": 8}
    assert grants(8, {"hung": 5}, {"hung": 100}) == {"hung": 8}


def test_two_targets_with_work_split_the_pool_evenly() -> None:
    assert grants(8, {}, {"hung": 8, "fine": 8}) == {"hung": 4, "fine": 4}


def test_a_target_holding_its_share_gets_nothing_while_another_catches_up() -> None:
    # the hung target's slots never free; freed ones go to the other target
    assert grants(4, {"hung": 4, "fine": 0}, {"hung": 4, "fine": 4}) == {"fine": 4}
    assert grants(1, {"hung": 7, "fine": 0}, {"hung": 1, "fine": 1}) == {"fine": 1}


def test_the_share_counts_what_each_target_already_holds() -> None:
    assert grants(4, {"a": 6, "b": 0, "c": 2}, {"a": 9, "b": 9, "c": 9}) == {"b": 3, "c": 1}


def test_a_target_that_can_use_little_leaves_the_rest_to_the_others() -> None:
    assert grants(10, {}, {"small": 2, "big": 50}) == {"small": 2, "big": 8}


def test_an_odd_slot_goes_to_the_first_target_in_the_order_given() -> None:
    assert grants(1, {}, {"b": 5, "a": 5}) == {"b": 1}
    assert grants(1, {}, {"a": 5, "b": 5}) == {"a": 1}
    assert grants(3, {"a": 1}, {"a": 5, "b": 5, "c": 5}) == {"b": 1, "c": 1, "a": 1}


def test_nothing_to_share_or_nobody_wanting_gives_nothing() -> None:
    assert grants(0, {}, {"a": 5}) == {}
    assert grants(5, {"a": 3}, {"a": 0}) == {}
    assert grants(5, {}, {}) == {}


@given(
    free=st.integers(min_value=0, max_value=300),
    targets=st.lists(
        st.tuples(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=300)),
        max_size=8,
    ),
)
def test_grants_are_max_min_fair_and_hand_out_what_they_can(
    free: int, targets: list[tuple[int, int]]
) -> None:
    holding = {f"t{i}": held for i, (held, _) in enumerate(targets)}
    wants = {f"t{i}": want for i, (_, want) in enumerate(targets)}
    given_ = grants(free, holding, wants)
    assert sum(given_.values()) == min(free, sum(wants.values()))
    assert all(0 < n <= wants[name] for name, n in given_.items())
    level = {name: holding[name] + given_.get(name, 0) for name in wants}
    for poor in wants:
        if given_.get(poor, 0) >= wants[poor]:
            continue  # it got all it could use
        for rich, n in given_.items():
            # no slot could move from a target that got some to one left lower
            assert level[rich] <= level[poor] + 1 or n == 0
