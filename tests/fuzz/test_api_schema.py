"""Fuzzing: schemathesis against a real ``csjd serve`` process, from ``openapi.yaml``.

Every operation of the committed schema gets generated requests (valid and
invalid ones) against a live gateway with real targets and real jobs, and every
answer must be no server error, a status the schema documents for that
operation, the content type it documents, and a body its schema accepts. The
run is bounded and derandomized so CI sees the same requests every time, and
Hypothesis keeps no example database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case

from app.testing import Reply, Sink
from tests.e2e.gateway import ROOT, GatewayProcess

pytestmark = pytest.mark.slow

#: The gateway runs with API keys on; every request is an admin's, which reaches
#: every operation (the 401 and 403 answers have their own tests in tests/api).
ADMIN_TOKEN = "fuzz-admin-token-1f3870be274f6c49b3e31a0c6728957f"
AUTH_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

#: Examples per operation, after schemathesis' own boundary cases: about 20 s on 2 cores.
MAX_EXAMPLES = 100

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]

schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml")


class Live:
    """What the running gateway holds, so that generated requests name real things."""

    targets: list[str] = []
    jobs: list[str] = []
    #: a URL that PUT /targets accepts and the gateway can deliver to
    url = ""


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    # Random ids and names only ever meet 404; as often as not, name what exists.
    if not path_parameters:
        return st.just(path_parameters)
    real: dict[str, list[str]] = {"job_id": Live.jobs, "name": Live.targets}
    choices = [
        {**path_parameters, key: st.sampled_from(values)}
        for key, values in real.items()
        if key in path_parameters and values
    ]
    if not choices:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters), *(st.fixed_dictionaries(c) for c in choices))


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    # A job for an unknown target, or a target at a random string, is refused before
    # anything else in the body is looked at; often, name what works.
    if not isinstance(body, dict):
        return st.just(body)
    if isinstance(body.get("target"), str) and Live.targets:
        named = st.sampled_from(Live.targets)
        return st.one_of(
            st.just(body),
            named.map(lambda t: {**body, "target": t}),
            named.map(lambda t: {"target": t, "payload": body.get("payload")}),
        )
    if isinstance(body.get("url"), str) and Live.url:
        return st.sampled_from([body, {**body, "url": Live.url}])
    return st.just(body)


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with Sink() as sink:
        sink.answer("/fail", Reply(status=400, body=b"no"))
        gateway = GatewayProcess(
            tmp_path_factory.mktemp("fuzz"), CSJD_API_KEYS=f"fuzz:{ADMIN_TOKEN}:admin"
        )
        gateway.client.headers.update(AUTH_HEADERS)
        gateway.start()
        try:
            gateway.put_target("fuzz-ok", url=sink.url("/ok"))
            gateway.put_target("fuzz-fail", url=sink.url("/fail"), max_attempts=1)
            gateway.put_target("fuzz-idle", url=sink.url("/ok"))
            Live.targets = ["fuzz-ok", "fuzz-fail", "fuzz-idle"]
            Live.url = sink.url("/ok")
            jobs = [
                gateway.post_job(f"fuzz-{i}", target, {"n": 1}, **extra).json()["id"]
                for i, (target, extra) in enumerate(
                    [
                        ("fuzz-ok", {}),
                        ("fuzz-fail", {}),
                        ("fuzz-ok", {"delay_s": 3600}),
                        ("fuzz-ok", {"delay_s": 3600}),
                    ]
                )
            ]
            gateway.wait_job(jobs[0], ("succeeded",))
            gateway.wait_job(jobs[1], ("failed",))
            assert gateway.client.post(f"/jobs/{jobs[3]}/cancel").status_code == 200
            Live.jobs = jobs
            yield gateway
        finally:
            gateway.stop()
            Live.targets, Live.jobs, Live.url = [], [], ""


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_matches_the_schema(case: Case, live_gateway: GatewayProcess) -> None:
    case.call_and_validate(
        base_url=str(live_gateway.client.base_url), headers=AUTH_HEADERS, checks=CHECKS
    )
