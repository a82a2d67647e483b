"""Register a target, POST a job and poll it to ``succeeded`` with the generated client.

The client is the ``csjd_client`` package that openapi-python-client makes
from csjd's ``openapi.yaml`` (``make clients`` puts it in ``clients/python/out``)::

    PYTHONPATH=clients/python/out CSJD_URL=http://127.0.0.1:8080 CSJD_TOKEN=… \\
        CSJD_TARGET_URL=https://example.test/hook python clients/python/smoke.py

The job is POSTed twice with one ``Idempotency-Key``: the replay must name the
same job. Prints the finished job as JSON; exits non-zero on anything unexpected.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TypeVar

from csjd_client import AuthenticatedClient
from csjd_client.api.jobs import create_job_jobs_post, get_job_jobs_job_id_get
from csjd_client.api.targets import put_target_targets_name_put
from csjd_client.models import (
    JobDetailOut,
    JobDetailOutState,
    JobIn,
    JobOut,
    TargetIn,
    TargetOut,
)
from csjd_client.types import Response

T = TypeVar("T")


def parsed(what: str, response: Response[Any], model: type[T]) -> T:
    """The answer as ``model``, or an error naming the problem csjd sent instead."""
    if not isinstance(response.parsed, model):
        raise SystemExit(f"{what}: HTTP {response.status_code} {response.content!r}")
    return response.parsed


def main() -> JobDetailOut:
    target = os.environ.get("CSJD_TARGET", "smoke-py")
    key = os.environ.get("CSJD_IDEMPOTENCY_KEY", f"smoke-py-{time.time_ns()}")
    deadline = time.monotonic() + float(os.environ.get("CSJD_DEADLINE_S", "30"))
    client = AuthenticatedClient(
        base_url=os.environ.get("CSJD_URL", "http://127.0.0.1:8080"),
        # any token does while the gateway runs without API keys
        token=os.environ.get("CSJD_TOKEN", "-"),
        raise_on_unexpected_status=True,
    )
    with client:
        put = put_target_targets_name_put.sync_detailed(
            target, client=client, body=TargetIn(url=os.environ["CSJD_TARGET_URL"])
        )
        parsed("PUT /targets", put, TargetOut)

        job_in = JobIn(target=target, payload={"order": key, "amount": 42})
        first = parsed(
            "POST /jobs",
            create_job_jobs_post.sync_detailed(client=client, body=job_in, idempotency_key=key),
            JobOut,
        )
        replay = create_job_jobs_post.sync_detailed(client=client, body=job_in, idempotency_key=key)
        if parsed("POST /jobs (replay)", replay, JobOut).id != first.id:
            raise SystemExit(f"the replay made a second job: {first.id}, {replay.parsed}")
        if replay.headers.get("idempotent-replayed") != "true":
            raise SystemExit("the replay was not marked Idempotent-Replayed")

        while True:
            job = parsed(
                "GET /jobs/{id}",
                get_job_jobs_job_id_get.sync_detailed(first.id, client=client),
                JobDetailOut,
            )
            if job.state == JobDetailOutState.SUCCEEDED:
                return job
            if job.state in (JobDetailOutState.FAILED, JobDetailOutState.CANCELLED):
                raise SystemExit(f"job ended {job.state}: {job.to_dict()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"job still {job.state} at the deadline: {job.to_dict()}")
            time.sleep(0.1)


if __name__ == "__main__":
    json.dump(main().to_dict(), sys.stdout)
    print()
