"""Clients generated from openapi.yaml drive a real gateway, API keys on.

Each one registers a target pointing at a real local sink, POSTs a job with an
``Idempotency-Key`` (and again: the replay names the same job), an ordering key, a
``traceparent`` and a callback to its own target, POSTs a batch of a new job, that job's
key again (a replay) and a job for a target that does not exist (refused alone,
``422``), polls both new jobs and the callback to ``succeeded``, puts, reads, lists and
deletes a schedule, and so proves the committed schema is one a generator can turn into
a working client. Each smoke program is also type-checked against the generated code, so
a renamed field or path fails here, not in a user's build.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from app.testing import Sink
from tests.clients.support import CLIENTS, TOKEN, run
from tests.e2e.gateway import GatewayProcess

pytestmark = pytest.mark.slow


def smoke_env(gateway: GatewayProcess, sink: Sink, target: str, key: str) -> dict[str, str]:
    return {
        "CSJD_URL": str(gateway.client.base_url).rstrip("/"),
        "CSJD_TOKEN": TOKEN,
        "CSJD_TARGET": target,
        "CSJD_TARGET_URL": sink.url(f"/{target}"),
        "CSJD_IDEMPOTENCY_KEY": key,
        "CSJD_DEADLINE_S": "30",
    }


def assert_round_trips(
    gateway: GatewayProcess, sink: Sink, target: str, key: str, output: str
) -> None:
    """The smoke program's two lines: the batch's answer as the client read it, then
    the job; each new job stored and delivered once, the refused one stored nowhere."""
    *_, batch_line, job_line = output.strip().splitlines()
    job: dict[str, Any] = json.loads(job_line)
    assert (job["state"], job["target"], job["idempotency_key"]) == ("succeeded", target, key)
    assert gateway.job(job["id"])["state"] == "succeeded"

    new, replayed, refused = json.loads(batch_line)["results"]
    assert (new["status"], new["replayed"], new["job"]["idempotency_key"]) == (
        202,
        False,
        f"{key}-batch",
    )
    assert "problem" not in new
    assert (replayed["status"], replayed["replayed"], replayed["job"]["id"]) == (
        202,
        True,
        job["id"],
    )
    assert (refused["status"], "job" in refused) == (422, False)
    problem = refused["problem"]
    assert problem["type"].endswith("/unknown-target")
    assert (problem["status"], problem["target"]) == (422, "no-such-target")
    assert gateway.job(new["job"]["id"])["state"] == "succeeded"
    stored = gateway.client.get("/jobs", params={"target": "no-such-target"}).json()["items"]
    assert stored == []

    # the job came with an ordering key, a traceparent and a callback to its own target
    assert (job["ordering_key"], job["callback_target"]) == (key, target)
    received = sink.received(f"/{target}")
    deliveries = {d.headers["webhook-id"]: json.loads(d.body) for d in received}
    assert len(received) == 3
    callback = deliveries.pop(job["callback_job_id"])
    assert (callback["type"], callback["job"]["id"]) == ("job.succeeded", job["id"])
    assert deliveries == {
        job["id"]: {"order": key, "amount": 42},
        new["job"]["id"]: {"order": f"{key}-batch", "amount": 43},
    }
    [traced] = [d for d in received if d.headers["webhook-id"] == job["id"]]
    trace_id = traced.headers["traceparent"].split("-")[1]
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_the_generated_python_client_posts_a_job_and_a_batch_and_polls_them_to_succeeded(
    gateway: GatewayProcess, sink: Sink, python_client: Path
) -> None:
    output = run(
        [sys.executable, str(CLIENTS / "python" / "smoke.py")],
        cwd=python_client,
        timeout=60,
        PYTHONPATH=str(python_client),
        **smoke_env(gateway, sink, "smoke-py", "order-py-1"),
    )
    assert_round_trips(gateway, sink, "smoke-py", "order-py-1", output)


def test_the_generated_typescript_client_posts_a_job_and_a_batch_and_polls_them_to_succeeded(
    gateway: GatewayProcess, sink: Sink, typescript_project: Path
) -> None:
    run(["npm", "run", "build"], cwd=typescript_project, timeout=180)
    output = run(
        ["node", "build/smoke.js"],
        cwd=typescript_project,
        timeout=60,
        **smoke_env(gateway, sink, "smoke-ts", "order-ts-1"),
    )
    assert_round_trips(gateway, sink, "smoke-ts", "order-ts-1", output)


def test_the_python_smoke_program_type_checks_against_the_generated_client(
    python_client: Path, tmp_path: Path
) -> None:
    run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(CLIENTS / "python" / "smoke.py"),
        ],
        cwd=tmp_path,
        timeout=180,
        MYPYPATH=str(python_client),
    )


def test_a_type_error_against_the_generated_typescript_types_fails_the_build(
    typescript_project: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "typescript"
    shutil.copytree(
        typescript_project, broken, symlinks=True, ignore=shutil.ignore_patterns("build")
    )
    smoke = broken / "smoke.ts"
    source = smoke.read_text()
    assert "job_id: id" in source
    smoke.write_text(source.replace("job_id: id", "jobId: id"))
    output = run(["npm", "run", "build"], cwd=broken, timeout=180, fails=True)
    assert "jobId" in output


SCHEDULE_ROUND_TRIP = """
import json, sys
from csjd_client import AuthenticatedClient
from csjd_client.api.schedules import (
    delete_schedule_schedules_name_delete,
    get_schedule_schedules_name_get,
    list_schedules_schedules_get,
    put_schedule_schedules_name_put,
)
from csjd_client.api.targets import put_target_targets_name_put
from csjd_client.models import ScheduleIn, ScheduleOut, TargetIn

base_url, token, target_url = sys.argv[1:4]
with AuthenticatedClient(base_url=base_url, token=token) as client:
    target = TargetIn(url=target_url)
    put_target_targets_name_put.sync_detailed("sched-py", client=client, body=target)
    body = ScheduleIn(cron="0 9 * * MON-FRI", timezone="Europe/Paris", target="sched-py",
                      payload={"report": "daily"})
    created = put_schedule_schedules_name_put.sync_detailed("weekdays", client=client, body=body)
    assert created.status_code == 201 and isinstance(created.parsed, ScheduleOut), created.content
    got = get_schedule_schedules_name_get.sync("weekdays", client=client)
    assert isinstance(got, ScheduleOut)
    listed = list_schedules_schedules_get.sync(client=client)
    gone = delete_schedule_schedules_name_delete.sync_detailed("weekdays", client=client)
    print(json.dumps({"created": created.parsed.to_dict(), "got": got.to_dict(),
                      "listed": [s.name for s in listed or []], "deleted": gone.status_code}))
"""


def test_the_generated_python_client_puts_reads_and_deletes_a_schedule(
    gateway: GatewayProcess, sink: Sink, python_client: Path, tmp_path: Path
) -> None:
    script = tmp_path / "schedule_round_trip.py"
    script.write_text(SCHEDULE_ROUND_TRIP)
    base_url = str(gateway.client.base_url).rstrip("/")
    output = run(
        [sys.executable, str(script), base_url, TOKEN, sink.url("/sched-py")],
        cwd=python_client,
        timeout=60,
        PYTHONPATH=str(python_client),
    )
    answer = json.loads(output.strip().splitlines()[-1])
    created = answer["created"]
    assert (created["cron"], created["timezone"], created["target"]) == (
        "0 9 * * MON-FRI",
        "Europe/Paris",
        "sched-py",
    )
    assert created["payload"] == {"report": "daily"} and created["next_run_at"]
    assert answer["got"] == created
    assert answer["listed"] == ["weekdays"]
    assert answer["deleted"] == 204
