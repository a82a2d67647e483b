"""Register a target, POST a job and a batch, and poll them to ``succeeded`` with the
generated client.

The client is the ``csjd_client`` package that openapi-python-client makes from csjd's
``openapi.yaml`` (``make clients`` puts it in ``clients/python/out``)::

    PYTHONPATH=clients/python/out CSJD_URL=http://127.0.0.1:8080 CSJD_TOKEN=… \\
        CSJD_TARGET_URL=https://example.test/hook python clients/python/smoke.py

The job is POSTed twice with one ``Idempotency-Key``: the replay must name the same job.
It carries an ordering key, a ``traceparent`` (``TRACEPARENT``) and a callback to its
own target, so its ending is delivered there too. Then one ``POST /jobs/batch`` holds a
new job, the first job again (a replay) and a job for a target that does not exist
(refused alone, ``422``). The schema gives each batch result as one model whose ``job``,
``replayed`` and ``problem`` may each be absent, so ``accepted`` and ``refused`` below
narrow it. Prints the batch's answer, then the finished job, one JSON line each; exits
non-zero on anything unexpected.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, TypeVar

from csjd_client import AuthenticatedClient
from csjd_client.api.jobs import (
    create_job_jobs_post,
    create_jobs_batch_jobs_batch_post,
    get_job_jobs_job_id_get,
)
from csjd_client.api.targets import put_target_targets_name_put
from csjd_client.models import (
    BatchIn,
    BatchJobIn,
    BatchOut,
    BatchResultOut,
    JobDetailOut,
    JobDetailOutState,
    JobIn,
    JobOut,
    Problem,
    TargetIn,
    TargetOut,
)
from csjd_client.types import Response

T = TypeVar("T")
#: the producer's trace context: its trace id reaches the target with each delivery
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#: a target name no one registered: its batch item is refused alone
NO_TARGET = "no-such-target"


def parsed(what: str, response: Response[Any], model: type[T]) -> T:
    """The answer as ``model``, or an error naming the problem csjd sent instead."""
    if not isinstance(response.parsed, model):
        raise SystemExit(f"{what}: HTTP {response.status_code} {response.content!r}")
    return response.parsed


def accepted(what: str, result: BatchResultOut, *, replayed: bool) -> JobOut:
    """A result that must be ``202`` with its job (a replay or not), and no problem."""
    if (
        result.status != 202
        or not isinstance(result.job, JobOut)
        or result.replayed is not replayed
        or isinstance(result.problem, Problem)
    ):
        raise SystemExit(f"{what}: {result.to_dict()}")
    return result.job


def refused(what: str, result: BatchResultOut, status: int, problem_type: str) -> Problem:
    """A result that must be ``status`` with a problem of ``problem_type``, and no job."""
    problem = result.problem
    if (
        result.status != status
        or isinstance(result.job, JobOut)
        or not isinstance(problem, Problem)
        or problem.status != status
        or not problem.type_.endswith(f"/{problem_type}")
        or problem.instance != "/jobs/batch"
    ):
        raise SystemExit(f"{what}: {result.to_dict()}")
    return problem


def post_batch(
    client: AuthenticatedClient, target: str, key: str, first: JobOut
) -> tuple[BatchOut, JobOut]:
    """A new job, the job ``key`` made (``first``, replayed), and one for ``NO_TARGET``;
    the answer, and the new job."""
    batch = BatchIn(
        jobs=[
            BatchJobIn(
                target=target,
                payload={"order": f"{key}-batch", "amount": 43},
                idempotency_key=f"{key}-batch",
            ),
            BatchJobIn(
                target=target,
                payload={"order": key, "amount": 42},
                idempotency_key=key,
                ordering_key=key,
                callback_target=target,
            ),
            BatchJobIn(target=NO_TARGET, payload={"order": key}, idempotency_key=f"{key}-none"),
        ]
    )
    out = parsed(
        "POST /jobs/batch",
        create_jobs_batch_jobs_batch_post.sync_detailed(client=client, body=batch),
        BatchOut,
    )
    if len(out.results) != 3:
        raise SystemExit(f"POST /jobs/batch: 3 jobs sent, {len(out.results)} results")
    new = accepted("the batch's new job", out.results[0], replayed=False)
    if (new.idempotency_key, new.target) != (f"{key}-batch", target) or new.id == first.id:
        raise SystemExit(f"the batch's new job is not the one sent: {new.to_dict()}")
    again = accepted("the batch's replay", out.results[1], replayed=True)
    if again.id != first.id:
        raise SystemExit(f"the batch's replay made a second job: {first.id}, {again.id}")
    problem = refused("the batch's job for no target", out.results[2], 422, "unknown-target")
    # what the problem adds beyond RFC 9457's fields is kept beside them
    if problem.additional_properties.get("target") != NO_TARGET:
        raise SystemExit(f"the refusal does not name the target: {problem.to_dict()}")
    return out, new


def succeeded(client: AuthenticatedClient, job_id: str, deadline: float) -> JobDetailOut:
    """Poll the job until it has succeeded; exit if it ends otherwise or by ``deadline``."""
    while True:
        job = parsed(
            "GET /jobs/{id}",
            get_job_jobs_job_id_get.sync_detailed(job_id, client=client),
            JobDetailOut,
        )
        if job.state == JobDetailOutState.SUCCEEDED:
            return job
        if job.state in (JobDetailOutState.FAILED, JobDetailOutState.CANCELLED):
            raise SystemExit(f"job ended {job.state}: {job.to_dict()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"job still {job.state} at the deadline: {job.to_dict()}")
        time.sleep(0.1)


def main() -> tuple[BatchOut, JobDetailOut]:
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

        job_in = JobIn(
            target=target,
            payload={"order": key, "amount": 42},
            ordering_key=key,
            callback_target=target,
        )
        first = parsed(
            "POST /jobs",
            create_job_jobs_post.sync_detailed(
                client=client, body=job_in, idempotency_key=key, traceparent=TRACEPARENT
            ),
            JobOut,
        )
        if (first.ordering_key, first.callback_target) != (key, target):
            raise SystemExit(f"the job lost its ordering key or callback: {first.to_dict()}")
        replay = create_job_jobs_post.sync_detailed(
            client=client, body=job_in, idempotency_key=key, traceparent=TRACEPARENT
        )
        if parsed("POST /jobs (replay)", replay, JobOut).id != first.id:
            raise SystemExit(f"the replay made a second job: {first.id}, {replay.parsed}")
        if replay.headers.get("idempotent-replayed") != "true":
            raise SystemExit("the replay was not marked Idempotent-Replayed")

        batch, new = post_batch(client, target, key, first)
        job = succeeded(client, first.id, deadline)
        succeeded(client, new.id, deadline)
        if not isinstance(job.callback_job_id, str):
            raise SystemExit(f"the job ended without a callback: {job.to_dict()}")
        succeeded(client, job.callback_job_id, deadline)
        return batch, job


if __name__ == "__main__":
    batch, job = main()
    print(json.dumps(batch.to_dict()))
    print(json.dumps(job.to_dict()))
