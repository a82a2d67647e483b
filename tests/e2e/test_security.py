"""End to end: API keys on a real server, and secrets that never reach an answer or the log."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

import pytest

from app.testing import Sink
from tests.e2e.gateway import GatewayProcess

pytestmark = pytest.mark.slow

PRODUCER = "producer-token-5d41402abc4b2a76b9719d91"
ADMIN = "admin-token-7d793037a0760186574b0282f2f4"
WRONG = "wrong-token-0cc175b9c0f1b6a831c399e269772661"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TARGET_HEADER = "target-header-value-6f8f57715090da26"
JOB_HEADER = "job-header-value-b8c37e33defde51cf91e"


def test_keys_guard_a_real_server_and_no_secret_reaches_an_answer_or_the_log(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    gateway = gateway_factory(CSJD_API_KEYS=f"shop:{PRODUCER}:producer,ops:{ADMIN}:admin").start()
    client = gateway.client
    as_admin = {"Authorization": f"Bearer {ADMIN}"}
    as_producer = {"Authorization": f"Bearer {PRODUCER}"}

    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    refused = client.get("/targets", headers={"Authorization": f"Bearer {WRONG}"})
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"

    put = client.put(
        "/targets/billing",
        json={"url": sink.url("/hook"), "secret": SECRET, "headers": {"X-Api-Key": TARGET_HEADER}},
        headers=as_admin,
    )
    assert put.status_code == 201, put.text
    assert (
        client.put("/targets/x", json={"url": sink.url()}, headers=as_producer).status_code == 403
    )

    posted = client.post(
        "/jobs",
        json={"target": "billing", "payload": {"n": 1}, "headers": {"X-Job": JOB_HEADER}},
        headers={**as_producer, "Idempotency-Key": "order-1"},
    )
    assert posted.status_code == 202, posted.text
    job_id = posted.json()["id"]
    seen_by_admin = client.get(f"/jobs/{job_id}", headers=as_admin)
    assert seen_by_admin.status_code == 200, seen_by_admin.text
    assert seen_by_admin.json()["caller"] == "shop"
    gateway.client.headers.update(as_producer)
    done = gateway.wait_job(job_id, ("succeeded",))
    assert done["attempts"] == 1
    delivered = sink.received("/hook")[0].headers
    assert delivered["x-api-key"] == TARGET_HEADER and delivered["x-job"] == JOB_HEADER

    # The job's detail shows its own headers to whoever may read the job (SPEC,
    # jobs version 2); the target's secret and header values never appear.
    detail = client.get(f"/jobs/{job_id}").json()
    assert detail["headers"] == {"X-Job": JOB_HEADER}
    assert SECRET not in str(detail) and TARGET_HEADER not in str(detail)
    answers = [
        posted.text,
        client.get(f"/jobs/{job_id}/attempts").text,
        client.get("/jobs").text,
        client.get("/targets", headers=as_admin).text,
        client.get("/targets/billing", headers=as_admin).text,
        put.text,
    ]
    target = json.loads(answers[4])
    assert target["secret"] != SECRET and target["headers"]["X-Api-Key"] != TARGET_HEADER
    gateway.signal(signal.SIGTERM)
    assert gateway.wait(30) == 0
    log = gateway.logs()
    assert '"auth_enabled"' in log and '"auth_disabled"' not in log
    for secret in (PRODUCER, ADMIN, WRONG, SECRET, TARGET_HEADER, JOB_HEADER):
        assert secret not in log, f"{secret} was logged"
        for answer in answers:
            assert secret not in answer, f"{secret} was answered"


def test_without_keys_the_gateway_warns_that_everyone_is_trusted(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gateway = gateway_factory().start()
    assert gateway.client.get("/targets").status_code == 200
    warning = next(
        json.loads(line) for line in gateway.logs().splitlines() if '"auth_disabled"' in line
    )
    assert warning["level"] == "warning"
    assert "CSJD_API_KEYS" in warning["detail"]


def test_unusable_keys_stop_the_server_with_a_clear_message(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gateway = gateway_factory(CSJD_API_KEYS=f"shop:{PRODUCER}:owner").start(wait=False)
    assert gateway.wait(20) == 2
    log = gateway.logs()
    assert "invalid configuration" in log and "'producer' or 'admin'" in log
    assert PRODUCER not in log
