"""Sharing the pool of delivery slots between targets: pure counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.core.share import grants, split


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


def test_a_round_shares_among_targets_with_due_work_before_drained_ones() -> None:
    rooms = {"a": 8, "b": 8, "c": 8}
    shares = split(8, rooms, {}, {"c"}, turn=0)
    assert shares.grants == {"a": 4, "b": 4}
    assert shares.wanting == {"a", "b"}  # each could have started 8


def test_slots_the_targets_with_due_work_cannot_use_go_to_the_drained_ones() -> None:
    shares = split(8, {"a": 2, "b": 3, "c": 8}, {"c": 1}, {"b", "c"}, turn=0)
    assert shares.grants == {"a": 2, "b": 3, "c": 3}  # the due target first, in claim order
    assert shares.wanting == set()  # "a" got all it could start


def test_a_round_with_only_drained_targets_looks_at_them_all_again() -> None:
    shares = split(4, {"a": 4, "b": 4}, {}, {"a", "b"}, turn=0)
    assert shares.grants == {"a": 2, "b": 2}
    assert shares.wanting == set()  # none known to have work: nobody was held back


def test_the_turn_rotates_who_gets_the_odd_slot() -> None:
    rooms = {"a": 5, "b": 5, "c": 5}
    firsts = [next(iter(split(1, rooms, {}, (), turn=turn).grants)) for turn in range(4)]
    assert firsts == ["a", "b", "c", "a"]
    assert list(split(3, rooms, {}, (), turn=1).grants) == ["b", "c", "a"]


def test_a_target_holding_its_share_is_wanting_while_another_catches_up() -> None:
    shares = split(4, {"hung": 4, "fine": 8}, {"hung": 4}, (), turn=0)
    assert shares.grants == {"fine": 4}
    assert shares.wanting == {"hung", "fine"}


def test_no_targets_no_shares() -> None:
    shares = split(8, {}, {}, (), turn=3)
    assert (shares.grants, shares.wanting) == ({}, set())


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
