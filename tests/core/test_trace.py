"""W3C Trace Context, read and continued: what is valid, what is ignored, what a job keeps."""

from __future__ import annotations

import pytest

from app.core import trace
from app.core.trace import TraceContext

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"


def test_a_valid_traceparent_names_its_trace_parent_and_flags() -> None:
    context = trace.parse(VALID)
    assert context == TraceContext(TRACE_ID, PARENT_ID, "01")
    assert context.traceparent == VALID
    assert context.sampled
    assert not trace.parse(f"00-{TRACE_ID}-{PARENT_ID}-00").sampled  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"00-{TRACE_ID}-{PARENT_ID}",  # no flags
        f"00-{'0' * 32}-{PARENT_ID}-01",  # trace id all zeros
        f"00-{TRACE_ID}-{'0' * 16}-01",  # parent id all zeros
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # upper case hex
        f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",  # not hex
        f"00-{TRACE_ID}-{PARENT_ID}-1",  # one flag digit
        f"00_{TRACE_ID}_{PARENT_ID}_01",  # not dashes
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 has four fields, no more
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is invalid
        f"0g-{TRACE_ID}-{PARENT_ID}-01",  # version not hex
        f"01-{TRACE_ID}-{PARENT_ID}-01extra",  # a later version's fields follow a dash
        f"00-{TRACE_ID}0-{PARENT_ID}-01",  # a trace id too long
    ],
)
def test_an_invalid_traceparent_names_no_context(value: str) -> None:
    assert trace.parse(value) is None
    assert trace.parse(value, "vendor=value") is None  # its tracestate goes with it


def test_a_later_version_is_read_as_version_00_and_continued_as_00() -> None:
    context = trace.parse(f"cc-{TRACE_ID}-{PARENT_ID}-03-what-comes-later")
    assert context == TraceContext(TRACE_ID, PARENT_ID, "01")  # the flags 00 defines
    assert trace.parse(f"01-{TRACE_ID}-{PARENT_ID}-01") == TraceContext(TRACE_ID, PARENT_ID, "01")


def test_version_00_keeps_its_flags_as_sent() -> None:
    assert trace.parse(f"00-{TRACE_ID}-{PARENT_ID}-03") == TraceContext(TRACE_ID, PARENT_ID, "03")


def test_a_valid_tracestate_is_kept_without_blank_members() -> None:
    context = trace.parse(VALID, " congo=t61rcWkgMzE , ,rojo=00f067aa0ba902b7,t@sys=x y ")
    assert context is not None
    assert context.state == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,t@sys=x y"


@pytest.mark.parametrize(
    "state",
    [
        "",
        "  ,  ",
        "Upper=1",  # keys are lower case
        "novalue",
        "key=",  # a value has at least one character
        "key=a,key=b",  # a key given twice
        "key=a\tb",  # a tab is no value character
        "key=has=equals",
        ",".join(f"k{i}=v" for i in range(33)),  # over 32 members
        "k=" + "v" * 257,  # a value over 256 characters
        "1abc=v",  # a simple key starts with a letter
    ],
)
def test_an_invalid_tracestate_is_dropped_and_the_traceparent_kept(state: str) -> None:
    assert trace.parse(VALID, state) == TraceContext(TRACE_ID, PARENT_ID, "01", None)


def test_a_tracestate_longer_than_a_job_header_may_be_is_dropped() -> None:
    members = [f"k{i}=" + "v" * 200 for i in range(21)]  # about 204 characters each
    assert trace.parse(VALID, ",".join(members[:19])).state is not None  # type: ignore[union-attr]
    assert trace.parse(VALID, ",".join(members)).state is None  # type: ignore[union-attr]


def test_a_request_names_a_context_only_with_exactly_one_traceparent() -> None:
    assert trace.from_request([VALID], []) == TraceContext(TRACE_ID, PARENT_ID, "01")
    assert trace.from_request([VALID, VALID], []) is None
    assert trace.from_request([], ["a=1"]) is None
    # several tracestate fields are one list
    assert trace.from_request([VALID], ["a=1", "b=2"]).state == "a=1,b=2"  # type: ignore[union-attr]


def test_a_job_body_s_trace_headers_are_taken_out_in_any_case() -> None:
    headers = {"X-Tenant": "acme", "TraceParent": VALID, "TRACESTATE": "a=1"}
    rest, context = trace.from_job_headers(headers)
    assert rest == {"X-Tenant": "acme"}
    assert context == TraceContext(TRACE_ID, PARENT_ID, "01", "a=1")


def test_a_job_body_s_invalid_traceparent_is_taken_out_and_names_nothing() -> None:
    rest, context = trace.from_job_headers({"traceparent": "garbage", "tracestate": "a=1"})
    assert (rest, context) == ({}, None)


def test_a_job_body_without_trace_headers_is_left_as_it_is() -> None:
    headers = {"X-Tenant": "acme"}
    rest, context = trace.from_job_headers(headers)
    assert rest is headers
    assert context is None


def test_a_job_keeps_its_context_under_lowercase_names_and_reads_it_back() -> None:
    context = TraceContext(TRACE_ID, PARENT_ID, "01", "a=1")
    kept = trace.with_context({"X-Tenant": "acme"}, context)
    assert kept == {"X-Tenant": "acme", "traceparent": VALID, "tracestate": "a=1"}
    assert trace.of_job(kept) == context
    assert trace.with_context({}, TraceContext(TRACE_ID, PARENT_ID, "01")) == {"traceparent": VALID}
    assert trace.of_job(None) is None
    assert trace.of_job({"X-Tenant": "acme"}) is None
    assert trace.of_job({"traceparent": "garbage"}) is None


def test_an_attempt_continues_the_trace_under_a_new_parent() -> None:
    context = TraceContext(TRACE_ID, PARENT_ID, "01", "a=1")
    parent_id = trace.parent_id_from(0x1234)
    assert parent_id == "0000000000001234"
    assert trace.continued(context, parent_id) == f"00-{TRACE_ID}-0000000000001234-01"
    assert trace.parse(trace.continued(context, trace.parent_id_from(0))) is not None
