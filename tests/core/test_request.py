"""The request a delivery sends, built from the job, its target and the time alone."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

from standardwebhooks.webhooks import Webhook

from app.core.job import JobRecord, JobState
from app.core.request import request_for
from app.core.signing import sign
from app.core.target import TargetSpec

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = 1_800_000_000.75
JOB = JobRecord(
    id="0190f5a2-0000-7000-8000-000000000001",
    caller="",
    idempotency_key="k",
    target="billing",
    state=JobState.RUNNING,
    attempts=2,
    delivery=3,
    max_attempts=10,
    created_at=NOW - 60,
    updated_at=NOW,
    next_attempt_at=None,
    expires_at=NOW + 3600,
    completed_at=None,
    claimed_at=NOW,
    lease_expires_at=NOW + 30,
    last_status_code=503,
    last_error="HTTP 503",
    failure_reason=None,
    payload=b'{"b":1,"a":[1,2]}',
    headers=None,
)
TARGET = TargetSpec(name="billing", url="http://127.0.0.1:9/hook", timeout_s=7.5)


def job(headers: Mapping[str, str] | None = None) -> JobRecord:
    return dataclasses.replace(JOB, headers=headers)


def test_the_request_is_exactly_what_the_contract_says() -> None:
    target = dataclasses.replace(
        TARGET, secret=SECRET, headers={"X-Tenant": "acme", "X-Both": "target"}
    )
    request = request_for(job({"X-Job": "j", "x-both": "job"}), target, NOW)
    assert (request.url, request.body, request.timeout_s) == (TARGET.url, JOB.payload, 7.5)
    ts = int(NOW)
    assert list(request.headers.items()) == [
        ("content-type", "application/json"),
        ("user-agent", "csjd/0.1.0"),
        ("webhook-id", JOB.id),
        ("webhook-timestamp", str(ts)),
        ("webhook-signature", sign(SECRET, JOB.id, ts, JOB.payload)),
        ("idempotency-key", JOB.id),
        ("csjd-attempt", "3"),
        ("X-Tenant", "acme"),
        ("X-Job", "j"),
        ("x-both", "job"),
    ]


def test_unsigned_when_the_target_has_no_secret() -> None:
    headers = request_for(job(), TARGET, NOW).headers
    assert "webhook-signature" not in headers
    assert list(headers)[-2:] == ["idempotency-key", "csjd-attempt"]


def test_the_signature_verifies_with_the_reference_verifier() -> None:
    # the reference verifier holds the timestamp to its own clock: sign at that time
    request = request_for(job(), dataclasses.replace(TARGET, secret=SECRET), time.time())
    assert Webhook(SECRET).verify(request.body, dict(request.headers)) == {"b": 1, "a": [1, 2]}


def test_a_later_header_replaces_an_earlier_one_whatever_its_case() -> None:
    target = dataclasses.replace(TARGET, headers={"X-Trace": "target", "X-Keep": "1"})
    headers = request_for(job({"x-TRACE": "job"}), target, NOW).headers
    assert [(k, v) for k, v in headers.items() if k.lower().startswith("x-")] == [
        ("X-Keep", "1"),
        ("x-TRACE", "job"),
    ]


def test_an_attempt_s_traceparent_replaces_the_job_s_and_its_tracestate_goes_along() -> None:
    kept = {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01", "tracestate": "v=1", "X-Job": "j"}
    sent = f"00-{'a' * 32}-{'c' * 16}-01"
    target = dataclasses.replace(TARGET, headers={"TraceParent": "from-the-target"})
    headers = request_for(job(kept), target, NOW, traceparent=sent).headers
    assert [(k, v) for k, v in headers.items() if k.lower().startswith("trace")] == [
        ("tracestate", "v=1"),
        ("traceparent", sent),
    ]
    # an attempt without one sends the job's headers as they are
    assert request_for(job(kept), TARGET, NOW).headers["traceparent"] == kept["traceparent"]
