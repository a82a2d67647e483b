"""End to end: ``csjd serve --workers 2``, a parent and its api and dispatcher
processes on one SQLite file, delivering to a real sink, stopped by real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.testing import Reply, Sink
from tests.e2e.gateway import GatewayProcess, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """``csjd serve --workers 2`` on ``tmp_path/csjd.db``, started and waited for."""
    started: list[GatewayProcess] = []

    def start(**env: str) -> GatewayProcess:
        parent = GatewayProcess(tmp_path, workers=2, **env)
        started.append(parent)
        parent.start(wait=False)
        wait_event(parent, "workers_started", timeout=30)
        return parent

    yield start
    for parent in started:
        parent.stop()


def events(gateway: GatewayProcess, name: str) -> list[dict[str, Any]]:
    lines = gateway.logs().splitlines()
    return [
        e for line in lines if line.startswith("{") and (e := json.loads(line))["event"] == name
    ]


def wait_event(gateway: GatewayProcess, name: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not (found := events(gateway, name)):
        assert gateway.proc is not None
        if gateway.proc.poll() is not None:
            found = events(gateway, name)  # logged just before it exited
            assert found, f"exited {gateway.proc.returncode} without {name}:\n{gateway.logs()}"
            break
        assert time.monotonic() < deadline, f"no {name}:\n{gateway.logs()}"
        time.sleep(0.02)
    return found[-1]


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while alive := [pid for pid in pids if running(pid)]:
        assert time.monotonic() < deadline, f"still running: {alive}"
        time.sleep(0.02)


def stored_jobs(db: Path) -> dict[str, tuple[str, int]]:
    """Each job's state and counted attempts, read from the file csjd left."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, state, attempts FROM jobs").fetchall()
    return {job_id: (state, attempts) for job_id, state, attempts in rows}


def test_an_api_and_a_dispatcher_process_deliver_what_the_api_accepts(
    workers: Callable[..., GatewayProcess], sink: Sink, tmp_path: Path
) -> None:
    parent = workers()
    up = wait_event(parent, "workers_started")
    assert (up["workers"], up["url"]) == (2, f"http://127.0.0.1:{parent.port}")
    assert up["database"] == str(parent.db)
    started = {e["role"]: e for e in events(parent, "gateway_started")}
    assert {role: e["worker"] for role, e in started.items()} == {
        "api": "api",
        "dispatcher": "dispatcher",
    }
    assert started["api"]["url"] == up["url"]
    assert started["dispatcher"]["url"] == up["dispatcher_url"] != up["url"]
    assert len(events(parent, "migrated")) == 1  # the parent's: the workers do not migrate
    assert len(events(parent, "auth_disabled")) == 1

    parent.put_target("billing", url=sink.url("/hook"))
    ids = [parent.post_job(f"k{i}", "billing", {"i": i}).json()["id"] for i in range(30)]
    for job_id in ids:
        assert parent.wait_job(job_id, ("succeeded",))["attempts"] == 1
    assert sorted(r.headers["webhook-id"] for r in sink.received("/hook")) == sorted(ids)
    # the public port is the api process's; the dispatcher answers on its own
    assert "dispatcher" not in parent.client.get("/readyz").json()["checks"]
    checks = httpx.get(up["dispatcher_url"] + "/readyz").json()["checks"]
    assert checks["dispatcher"] == "ok"

    second = GatewayProcess(tmp_path, workers=2).start(wait=False)
    try:
        assert second.wait(30) == 1
        assert "another csjd gateway" in second.logs()
        assert not events(second, "workers_started")
    finally:
        second.stop()
    assert parent.client.get("/readyz").status_code == 200


def test_sigterm_to_the_parent_lets_each_worker_drain_and_exits_0(
    workers: Callable[..., GatewayProcess], sink: Sink
) -> None:
    sink.answer("/slow", Reply(delay_s=1.5))
    parent = workers()
    parent.put_target("slow", url=sink.url("/slow"), max_concurrency=10)
    ids = [parent.post_job(f"k{i}", "slow", i).json()["id"] for i in range(5)]
    sink.wait_for(lambda got: len(got) == 5)  # all five are held by the sink

    parent.signal(signal.SIGTERM)
    assert parent.wait(30) == 0
    draining = {e["worker"]: e for e in events(parent, "draining")}
    assert draining["dispatcher"]["deliveries_in_flight"] == 5
    assert set(draining) == {"api", "dispatcher"}
    assert {e["worker"] for e in events(parent, "gateway_stopped")} == {"api", "dispatcher"}
    assert wait_event(parent, "workers_stopped")["statuses"] == {"api": 0, "dispatcher": 0}
    # the slow replies were waited for: each job succeeded at its first attempt
    assert stored_jobs(parent.db) == dict.fromkeys(ids, ("succeeded", 1))
    assert len(sink.received("/slow")) == 5


def test_kill_9_of_the_parent_takes_the_workers_with_it_and_a_restart_loses_nothing(
    workers: Callable[..., GatewayProcess], sink: Sink, tmp_path: Path
) -> None:
    sink.answer("/slow", Reply(delay_s=0.5))
    first = workers()
    up = wait_event(first, "workers_started")
    first.put_target("slow", url=sink.url("/slow"), max_concurrency=20)
    ids = [first.post_job(f"k{i}", "slow", {"i": i}).json()["id"] for i in range(60)]
    sink.wait_for(lambda got: len(got) >= 10)  # deliveries are under way
    first.kill9()
    wait_gone([up["api_pid"], up["dispatcher_pid"]])

    second = GatewayProcess(tmp_path, workers=2)
    second.port, second.client = first.port, first.client
    second.log_path = tmp_path / "restarted.log"
    second.start(wait=False)
    try:
        wait_event(second, "workers_started", timeout=30)
        for job_id in ids:
            assert second.wait_job(job_id, ("succeeded",), timeout=60)["attempts"] >= 1
        assert {r.headers["webhook-id"] for r in sink.received("/slow")} == set(ids)
        rescued = wait_event(second, "attempts_rescued")
        assert rescued["worker"] == "dispatcher" and rescued["count"] >= 1
    finally:
        second.stop()


def test_a_worker_killed_makes_the_parent_stop_the_other_and_fail(
    workers: Callable[..., GatewayProcess],
) -> None:
    parent = workers()
    up = wait_event(parent, "workers_started")
    os.kill(up["dispatcher_pid"], signal.SIGKILL)
    assert parent.wait(30) == 1
    died = wait_event(parent, "worker_died")
    assert (died["worker"], died["pid"], died["status"]) == (
        "dispatcher",
        up["dispatcher_pid"],
        -signal.SIGKILL,
    )
    assert died["detail"] == "the dispatcher process exited unasked; stopping the api process"
    assert [e["worker"] for e in events(parent, "gateway_stopped")] == ["api"]  # it drained
    wait_gone([up["api_pid"]])


def test_workers_that_cannot_start_stop_the_parent_with_their_reason(
    tmp_path: Path,
) -> None:
    targets = tmp_path / "targets.json"
    targets.write_text('[{"name": "x", "url": "ftp://nope"}]')  # read by each worker
    parent = GatewayProcess(tmp_path, workers=2, CSJD_TARGETS_FILE=str(targets))
    parent.start(wait=False)
    try:
        assert parent.wait(60) == 2
        died = wait_event(parent, "worker_died")
        assert died["detail"].startswith(f"the {died['worker']} process stopped before it was up")
        assert "csjd: invalid configuration" in parent.logs()
        assert not events(parent, "workers_started")
    finally:
        parent.stop()


def test_a_second_signal_forces_the_workers(
    workers: Callable[..., GatewayProcess], sink: Sink
) -> None:
    sink.answer("/hold", Reply(hang=True))
    parent = workers(CSJD_DRAIN_TIMEOUT_S="30")
    parent.put_target("hold", url=sink.url("/hold"), timeout_s=120)
    parent.post_job("k", "hold", 1)
    sink.wait_for(lambda got: len(got) == 1)

    parent.signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    while "dispatcher" not in {e["worker"] for e in events(parent, "draining")}:
        assert time.monotonic() < deadline, parent.logs()
        time.sleep(0.02)
    assert parent.proc is not None and parent.proc.poll() is None  # it waits for the delivery
    forced_at = time.monotonic()
    parent.signal(signal.SIGINT)
    assert parent.wait(10) == 128 + signal.SIGINT
    assert time.monotonic() - forced_at < 5
    forced = {e["worker"]: e for e in events(parent, "forced_exit")}
    assert forced["dispatcher"]["deliveries_in_flight"] == 1
    assert wait_event(parent, "workers_forced")["signal"] == "SIGINT"


def test_a_worker_still_running_past_its_budget_is_killed(
    workers: Callable[..., GatewayProcess],
) -> None:
    parent = workers(CSJD_DRAIN_TIMEOUT_S="0.5")
    up = wait_event(parent, "workers_started")
    os.kill(up["dispatcher_pid"], signal.SIGSTOP)  # it cannot act on the SIGTERM to come
    stopped_at = time.monotonic()
    parent.signal(signal.SIGTERM)
    assert parent.wait(30) == 128 + signal.SIGKILL
    # its own budget (0.5 s of drain, 5 s of margin) and the parent's 2 s
    assert time.monotonic() - stopped_at >= 7.5
    killed = wait_event(parent, "worker_killed")
    assert (killed["worker"], killed["pid"]) == ("dispatcher", up["dispatcher_pid"])
    assert wait_event(parent, "workers_stopped")["statuses"] == {
        "api": 0,
        "dispatcher": -signal.SIGKILL,
    }


def _serve(tmp_path: Path, *argv: str, database: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSJD_")}
    env["CSJD_DATABASE_URL"] = database or f"sqlite+aiosqlite:///{tmp_path / 'csjd.db'}"
    env["CSJD_LOG_FORMAT"] = "json"
    return subprocess.Popen(
        [sys.executable, "-m", "app", "serve", *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_what_workers_cannot_do_is_refused_with_one_line(tmp_path: Path) -> None:
    memory = "sqlite+aiosqlite:///:memory:"
    cases = {
        ("--workers", "3"): "--workers 3: at most 2, an api and a dispatcher process; more api "
        "processes behind one port would each answer /metrics with their own counts and "
        "queue for SQLite's one writer (replicas on Postgres go further)",
        ("--workers", "0"): "--workers 0: give 1 (one process) or 2 (an api and a dispatcher "
        "process)",
        ("--workers", "2", "--role", "api"): "--workers and --role: choose one (--workers 2 "
        "starts an api and a dispatcher process itself)",
        ("--workers", "1", "--role", "dispatcher"): "--workers and --role: choose one "
        "(--workers 2 starts an api and a dispatcher process itself)",
        ("--dispatcher-port", "9999"): "--dispatcher-port is the dispatcher process's port: "
        "only with --workers 2",
        ("--workers", "2", memory): "--workers 2 needs a SQLite file or Postgres: two "
        "processes cannot share a database in memory",
        ("--worker-of", "1"): "--worker-of, --listen-fd and --ready-fd are for the workers "
        "of --workers",
    }
    running = {
        argv: _serve(
            tmp_path,
            *(a for a in argv if a != memory),
            database=memory if memory in argv else None,
        )
        for argv in cases
    }
    for argv, proc in running.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (argv, err)
        assert err.splitlines() == [f"csjd: {cases[argv]}"], argv
        assert out == ""
    assert not (tmp_path / "csjd.db").exists()


def test_a_taken_port_is_one_line_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        api = _serve(tmp_path, "--workers", "2", "--port", str(port))
        dispatcher = _serve(
            tmp_path, "--workers", "2", "--port", str(free_port()), "--dispatcher-port", str(port)
        )
        runs = {
            name: (proc, *proc.communicate(timeout=60))
            for name, proc in (("--port", api), ("--dispatcher-port", dispatcher))
        }
    for option, (proc, _out, err) in runs.items():
        assert proc.returncode == 1, err
        errors = [line for line in err.splitlines() if not line.startswith("{")]
        assert errors == [
            f"csjd: cannot listen on 127.0.0.1:{port}: address already in use "
            f"(another csjd or another program has it; choose one with {option})"
        ]
        assert "migrated" not in err and "workers_started" not in err
    assert not (tmp_path / "csjd.db").exists()  # nothing started before the bind failed


def test_a_worker_whose_parent_is_gone_does_not_start(tmp_path: Path) -> None:
    # its parent is this test, not pid 1: as if pid 1 had died before the worker looked
    proc = _serve(
        tmp_path, "--role", "api", "--worker-of", "1", "--listen-fd", "0", "--ready-fd", "1"
    )
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.splitlines() == ["csjd: the parent process 1 is gone; not starting"]
    assert not (tmp_path / "csjd.db").exists()
