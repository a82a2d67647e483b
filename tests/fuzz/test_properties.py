"""Properties of the pure core: the idempotency fingerprint and the job's state machine.

Fingerprint. Intake fingerprints ``JobIn.model_dump(mode="json")``: a body the
JSON parser and the model have already read. Two requests are the same request
when their bodies are equal as JSON values: objects equal whatever their key
order, arrays element by element, strings code point by code point (no Unicode
normalisation: NFC and NFD spell different strings, delivered as different
bytes), numbers by value (``1``, ``1.0`` and ``1e0`` are one number, so are
``0`` and ``-0.0``; ``2**53 + 1`` and ``2.0**53`` are not), and ``true`` is not
``1``. The fingerprint must be equal exactly when the bodies are equal so. Only
what intake lets through is in scope: finite numbers and integers within 64
bits (``JobIn`` refuses the rest).

State machine. ``app.core.job.transition`` is the whole of it; the diagram of
the contract is written out below, independently of the code, and random event
sequences from every state are checked against it.
"""

from __future__ import annotations

import json
import unicodedata
from collections import deque
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from app.api.schemas import JobIn
from app.core.idempotency import fingerprint
from app.core.job import TERMINAL, Event, IllegalTransition, JobState, transition

PROPERTY = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

INT_MIN, INT_MAX = -(2**63), 2**64 - 1

# -- the fingerprint ---------------------------------------------------------------------

leaves = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1.0, 2.0**53, 2.0**63, 2.0**64, 1e19, 1e300, 0.1])
    | st.text()
    | st.sampled_from(["", "é", "e\u0301", "\U0001f600", "\\", '"', "\x00", "\u2028"])
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


def json_equal(a: Any, b: Any) -> bool:
    """Equal as JSON values (see the module docstring), written apart from the code."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b  # exact in Python, across int and float
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@st.composite
def respelled(draw: st.DrawFn, value: Any) -> Any:
    """The same JSON value, written differently: key order shuffled, integral numbers as floats."""
    if isinstance(value, dict):
        keys = draw(st.permutations(list(value)))
        return {k: draw(respelled(value[k])) for k in keys}
    if isinstance(value, list):
        return [draw(respelled(v)) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and float(value) == value:
        return draw(st.sampled_from([value, float(value)]))
    if isinstance(value, float) and value.is_integer() and INT_MIN <= value <= INT_MAX:
        return draw(st.sampled_from([value, int(value)]))
    return value


@st.composite
def changed(draw: st.DrawFn, value: Any) -> Any:
    """The value with one leaf (or one key) replaced by something drawn at random."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        if draw(st.booleans()):
            return {k: (draw(changed(v)) if k == key else v) for k, v in value.items()}
        new_key = draw(st.text(max_size=5))
        return {(new_key if k == key else k): v for k, v in value.items()}
    if isinstance(value, list) and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        return [draw(changed(v)) if j == i else v for j, v in enumerate(value)]
    return draw(json_values)


def body(payload: Any, **fields: Any) -> dict[str, Any]:
    return {"target": "billing", "payload": payload, **fields}


@PROPERTY
@given(st.data(), json_values)
def test_the_same_body_written_differently_has_one_fingerprint(
    data: st.DataObject, payload: Any
) -> None:
    other = data.draw(respelled(body(payload, delay_s=0)))
    assert fingerprint("billing", other) == fingerprint("billing", body(payload, delay_s=0))


@PROPERTY
@given(st.data(), json_values)
def test_fingerprints_are_equal_exactly_when_the_bodies_are(
    data: st.DataObject, payload: Any
) -> None:
    other = data.draw(changed(payload))
    same = fingerprint("t", body(payload)) == fingerprint("t", body(other))
    assert same == json_equal(payload, other), (payload, other)


@PROPERTY
@given(json_values, st.sampled_from(["billing", "billing2", "b"]))
def test_the_target_is_part_of_the_fingerprint(payload: Any, other_target: str) -> None:
    a = fingerprint("a", body(payload))
    assert (a == fingerprint(other_target, body(payload))) is False


@PROPERTY
@given(json_values, st.data())
def test_json_text_spelling_does_not_change_the_fingerprint(
    payload: Any, data: st.DataObject
) -> None:
    # What intake sees: the raw text parsed by JobIn, then dumped as JSON. \\u escapes
    # (surrogate pairs for characters beyond the BMP), key order and whitespace are spelling.
    plain = json.dumps(body(payload), ensure_ascii=False, separators=(",", ":"))
    indent = data.draw(st.sampled_from([None, 2]))
    escaped = json.dumps(data.draw(respelled(body(payload))), ensure_ascii=True, indent=indent)

    def seen_by_intake(text: str) -> str:
        parsed = JobIn.model_validate_json(text.encode())
        return fingerprint(parsed.target, parsed.model_dump(mode="json"))

    assert seen_by_intake(plain) == seen_by_intake(escaped)


@PROPERTY
@given(st.text(min_size=1))
def test_nfc_and_nfd_spellings_are_different_requests(text: str) -> None:
    nfc, nfd = unicodedata.normalize("NFC", text), unicodedata.normalize("NFD", text)
    same = fingerprint("t", body({"s": nfc})) == fingerprint("t", body({"s": nfd}))
    assert same == (nfc == nfd)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (1, 1.0, True),
        (0, -0.0, True),  # one number in JSON; delivered as sent (0 or -0.0)
        (10**19, 1e19, True),
        (2**53, 2.0**53, True),
        (2**53 + 1, 2.0**53, False),
        (INT_MAX, 2.0**64, False),  # 2**64 is past the integers intake accepts
        (0.1 + 0.2, 0.3, False),
        (True, 1, False),
        (None, 0, False),
        ("1", 1, False),
        ("\U0001f600", "\ud83d\ude00".encode("utf-16", "surrogatepass").decode("utf-16"), True),
        ("é", "e\u0301", False),
    ],
)
def test_numbers_and_strings_as_the_contract_compares_them(a: Any, b: Any, same: bool) -> None:
    assert (fingerprint("t", body([a])) == fingerprint("t", body([b]))) is same


# -- the state machine -------------------------------------------------------------------

S, E = JobState, Event
ACTIVE = [s for s in S if s not in TERMINAL]
#: SPEC.md, "The job": every arrow of the diagram, and nothing else.
DIAGRAM: dict[tuple[JobState, Event], JobState] = {
    (S.SCHEDULED, E.DUE): S.QUEUED,
    (S.QUEUED, E.CLAIMED): S.RUNNING,
    (S.RUNNING, E.SUCCEEDED): S.SUCCEEDED,
    (S.RUNNING, E.RETRY): S.RETRYING,  # retryable failure, throttled, interrupted by a crash
    (S.RETRYING, E.DUE): S.QUEUED,
    (S.RUNNING, E.REQUEUE): S.QUEUED,  # interrupted by a drain (Lifecycle)
    (S.RUNNING, E.FAILED): S.FAILED,  # permanent, attempts or time used up
    # max_retry_duration_s: a job not delivered in time is failed (expired) while it waits
    (S.SCHEDULED, E.FAILED): S.FAILED,
    (S.QUEUED, E.FAILED): S.FAILED,
    (S.RETRYING, E.FAILED): S.FAILED,
    **{(s, E.CANCEL): S.CANCELLED for s in ACTIVE},
    # POST /jobs/{id}/retry (Version 2: a succeeded job too, to send it again)
    (S.FAILED, E.OPERATOR_RETRY): S.QUEUED,
    (S.CANCELLED, E.OPERATOR_RETRY): S.QUEUED,
    (S.SUCCEEDED, E.OPERATOR_RETRY): S.QUEUED,
}


def reaches_an_end(state: JobState) -> bool:
    seen, todo = {state}, deque([state])
    while todo:
        here = todo.popleft()
        if here in TERMINAL:
            return True
        for (source, _), goal in DIAGRAM.items():
            if source is here and goal not in seen:
                seen.add(goal)
                todo.append(goal)
    return False


class JobLifecycle(RuleBasedStateMachine):
    """One job taking random events; illegal ones must be refused and change nothing."""

    state: JobState

    @initialize(start=st.sampled_from(list(S)))
    def start(self, start: JobState) -> None:
        self.state = start

    @rule(event=st.sampled_from(list(E)))
    def take(self, event: Event) -> None:
        before = self.state
        if (before, event) not in DIAGRAM:
            with pytest.raises(IllegalTransition) as refused:
                transition(before, event)
            assert refused.value.status == 409
            return
        after = transition(before, event)
        assert after is DIAGRAM[(before, event)]
        if before in TERMINAL:
            assert event is E.OPERATOR_RETRY and after is S.QUEUED
        if after is S.RUNNING:
            assert (before, event) == (S.QUEUED, E.CLAIMED)
        self.state = after

    @invariant()
    def every_job_can_still_end(self) -> None:
        # at least once, nothing lost: from wherever it is, a job has a way to finish
        assert reaches_an_end(self.state)


JobLifecycle.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, derandomize=True, database=None, deadline=None
)
test_random_event_sequences_follow_the_diagram = JobLifecycle.TestCase


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("event", list(E))
def test_every_state_and_event_is_the_diagram(state: JobState, event: Event) -> None:
    if (state, event) in DIAGRAM:
        assert transition(state, event) is DIAGRAM[(state, event)]
    else:
        with pytest.raises(IllegalTransition):
            transition(state, event)
