"""A real ``csjd serve`` process for end-to-end tests.

By default it runs on a SQLite file in its working folder; ``database_url``
points it elsewhere (a Postgres replica), and ``clock_skew_s`` runs it with
its wall clock that many seconds off (libfaketime, see ``tests/faults/clock.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.faults.clock import faketime_env

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        role: str = "all",
        workers: int | None = None,
        database_url: str | None = None,
        clock_skew_s: int = 0,
        **env: str,
    ) -> None:
        self.workdir = workdir
        self.role = role
        #: ``csjd serve --workers N`` instead of ``--role``
        self.workers = workers
        self.db = workdir / "csjd.db"
        self.port = free_port()
        self.clock_skew_s = clock_skew_s
        self.env = {
            **os.environ,
            "CSJD_DATABASE_URL": database_url or f"sqlite+aiosqlite:///{self.db}",
            "CSJD_ALLOW_PRIVATE_TARGETS": "true",
            "CSJD_LOG_FORMAT": "json",
            **(faketime_env(clock_skew_s) if clock_skew_s else {}),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"gateway-{self.port}.log"
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def start(self, *, wait: bool = True) -> GatewayProcess:
        self.log = self.log_path.open("ab")
        how = ["--role", self.role] if self.workers is None else ["--workers", str(self.workers)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(self.port), *how],
            cwd=self.workdir,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"csjd exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"csjd never became ready:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self.log.close()
        return code

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.signal(signal.SIGTERM)
                try:
                    self.wait(30)
                except subprocess.TimeoutExpired:
                    self.kill9()
            self.log.close()  # also when it had exited by itself
        self.client.close()

    # -- API helpers -------------------------------------------------------------

    def put_target(self, name: str, **fields: Any) -> dict[str, Any]:
        response = self.client.put(f"/targets/{name}", json=fields)
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    def post_job(self, key: str, target: str, payload: Any, **fields: Any) -> httpx.Response:
        return self.client.post(
            "/jobs",
            json={"target": target, "payload": payload, **fields},
            headers={"Idempotency-Key": key},
        )

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/jobs/{job_id}").json())

    def wait_job(
        self, job_id: str, states: tuple[str, ...], timeout: float = 20.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job stayed {job['state']}: {job}")
            time.sleep(0.02)
