"""Starting and stopping real ``csjd`` processes, as a new user meets them: the
lines that say where csjd listens and which database it uses (console at a
terminal, JSON elsewhere), a port already taken, a database that cannot be
used, and Ctrl-C while a delivery is held."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from alembic.script import ScriptDirectory

from app.storage.migrate import alembic_config
from app.testing import Reply, Sink
from tests.e2e.gateway import GatewayProcess, free_port
from tests.pg import PostgresDatabases, require_postgres

pytestmark = pytest.mark.slow

PASSWORD = "hunter2-secret"
KEYS = "ops:ops-token-0123456789abcdef0123:admin,shop:shop-token-0123456789abcdef012:producer"
#: a zone far from UTC, so local time and UTC cannot be mistaken for each other
ZONE = "Asia/Kolkata"


def _env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a csjd a new user starts: no CSJD_* variable but these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSJD_")}
    return {**env, "CSJD_DATABASE_URL": database_url, **extra}


class Csjd:
    """``csjd serve`` with its log in a file; standard output a terminal or not."""

    def __init__(self, workdir: Path, env: dict[str, str], *, terminal: bool) -> None:
        self.port = free_port()
        self.log_path = workdir / f"csjd-{self.port}.log"
        self._log = self.log_path.open("wb")
        master, slave = pty.openpty() if terminal else (None, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(self.port)],
            cwd=workdir,
            env=env,
            stdout=slave if slave is not None else subprocess.DEVNULL,
            stderr=self._log,
        )
        self._master = master
        if slave is not None:
            os.close(slave)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while needle not in (text := self.text()):
            if self.proc.poll() is not None:
                raise AssertionError(f"csjd exited with {self.proc.returncode}:\n{text}")
            assert time.monotonic() < deadline, f"never logged {needle!r}:\n{text}"
            time.sleep(0.02)
        return text

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        if self._master is not None:
            os.close(self._master)
            self._master = None


@pytest.fixture
def processes() -> Iterator[list[Csjd]]:
    started: list[Csjd] = []
    yield started
    for csjd in started:
        csjd.close()


def _head() -> tuple[str, str]:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = scripts.get_revision(scripts.get_current_head() or "")
    assert head is not None
    return head.revision, Path(head.path).name


def test_a_terminal_gets_console_lines_naming_where_csjd_listens(
    tmp_path: Path, processes: list[Csjd]
) -> None:
    db = tmp_path / "data" / "csjd.db"
    env = _env(f"sqlite+aiosqlite:///{db}", TZ=ZONE)
    csjd = Csjd(tmp_path, env, terminal=True)
    processes.append(csjd)
    text = csjd.wait_for("gateway_started")
    lines = {line.split()[3].rstrip(":"): line for line in text.splitlines()}
    base = f"http://127.0.0.1:{csjd.port}"
    revision, migration = _head()

    migrated = re.match(
        r"^(\S+ \S+) INFO    migrated database=(\S+) revision=(\S+) migration=(\S+) "
        r'description="(.+)"$',
        lines["migrated"],
    )
    assert migrated, lines["migrated"]
    stamp, database, rev, file, description = migrated.groups()
    assert (database, rev, file) == (str(db), revision, migration)
    assert description and "\n" not in description
    written = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=ZoneInfo(ZONE))
    assert abs(datetime.now(UTC) - written) < timedelta(minutes=1)  # local time, in its zone

    assert lines["gateway_started"].split(None, 4)[4] == (
        f"version=0.1.0 role=all url={base} database={db} auth=off api_keys=0 "
        f"ui={base}/ui docs={base}/docs"
    )
    assert "auth_disabled: CSJD_API_KEYS" in lines["auth_disabled"]
    assert not text.lstrip().startswith("{") and "\x1b" not in text
    assert httpx.get(f"{base}/docs").status_code == 200  # the address printed answers

    assert csjd.stop(signal.SIGINT) == 0
    assert "INFO    draining: stopping, no deliveries in flight; Ctrl-C again" in csjd.text()


def test_json_lines_name_the_postgres_database_and_never_its_password(
    tmp_path: Path, processes: list[Csjd], postgres: PostgresDatabases
) -> None:
    fresh = postgres.fresh()
    user, rest = fresh.split("://", 1)[1].split("@", 1)
    url = f"postgresql://{user}:{PASSWORD}@{rest}"  # the server trusts, and ignores it
    csjd = Csjd(tmp_path, _env(url, CSJD_API_KEYS=KEYS), terminal=False)
    processes.append(csjd)
    csjd.wait_for("gateway_started")
    assert csjd.stop() == 0
    text = csjd.text()
    assert PASSWORD not in text
    events = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    # a clean start and stop says only csjd's own events (no library's chatter)
    assert all(e["logger"].split(".")[0] == "csjd" for e in events), [
        (e["logger"], e["event"]) for e in events
    ]
    for event in events:
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", event["ts"]), event
        assert "color_message" not in event and "\x1b" not in json.dumps(event)
    by_name = {e["event"]: e for e in events}
    shown = f"postgresql://{user}@{rest}"
    revision, migration = _head()
    migrated = by_name["migrated"]
    assert (migrated["database"], migrated["revision"], migrated["migration"]) == (
        shown,
        revision,
        migration,
    )
    assert migrated["description"]
    base = f"http://127.0.0.1:{csjd.port}"
    started = by_name["gateway_started"]
    assert {k: v for k, v in started.items() if k not in ("ts", "level", "logger")} == {
        "event": "gateway_started",
        "version": "0.1.0",
        "role": "all",
        "url": base,
        "database": shown,
        "auth": "on",
        "api_keys": 2,
        "ui": f"{base}/ui",
        "docs": f"{base}/docs",
    }
    assert [e["event"] for e in events].index("gateway_started") > [
        e["event"] for e in events
    ].index("migrated")
    assert "draining" in by_name and by_name["gateway_stopped"]


def test_a_port_already_taken_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    db = tmp_path / "csjd.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "app", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=_env(f"sqlite+aiosqlite:///{db}", CSJD_LOG_FORMAT="json"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert errors == [
        f"csjd: cannot listen on 127.0.0.1:{port}: address already in use "
        "(another csjd or another program has it; choose one with --port)"
    ]
    assert "Traceback" not in done.stderr + done.stdout
    assert "gateway_started" not in done.stderr and "migrated" not in done.stderr
    assert not db.exists()  # nothing was started before the bind failed


def test_a_database_that_cannot_be_used_is_one_line_and_status_2(tmp_path: Path) -> None:
    """Postgres not listening, a Postgres database that does not exist, a SQLite file
    whose directory cannot be: ``serve`` and ``migrate`` alike (run side by side)."""
    require_postgres()
    (tmp_path / "a-file").write_text("not a directory")
    databases = {
        "unreachable": (
            f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/csjd",
            "connection refused",
        ),
        "missing": (
            f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/csjd_missing_{uuid.uuid4().hex[:8]}",
            "does not exist",
        ),
        "bad-sqlite-directory": (
            f"sqlite+aiosqlite:///{tmp_path / 'a-file' / 'csjd.db'}",
            "a-file is not a directory",
        ),
    }
    commands = {"migrate": ["migrate"], "serve": ["serve", "--port", "0"]}
    running = {
        (case, name): subprocess.Popen(
            [sys.executable, "-m", "app", *command],
            cwd=tmp_path,
            env=_env(url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case, (url, _) in databases.items()
        for name, command in commands.items()
    }
    for (case, name), proc in running.items():
        stdout, stderr = proc.communicate(timeout=60)
        output = stderr + stdout
        where = f"{name} with the {case} database:\n{output}"
        assert proc.returncode == 2, where
        errors = [line for line in stderr.splitlines() if line.startswith("csjd:")]
        assert len(errors) == 1, where
        assert errors[0].startswith("csjd: cannot use the database "), where
        assert databases[case][1] in errors[0], where
        assert "Traceback" not in output and "Exception" not in output, where
        assert PASSWORD not in output, where
        assert "gateway_started" not in output, where


def _events(gateway: GatewayProcess, name: str) -> list[dict[str, Any]]:
    return [e for line in gateway.logs().splitlines() if (e := json.loads(line))["event"] == name]


def _wait_event(gateway: GatewayProcess, name: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not (found := _events(gateway, name)):
        assert time.monotonic() < deadline, f"no {name}:\n{gateway.logs()}"
        time.sleep(0.02)
    return found[0]


def test_ctrl_c_says_what_it_waits_for_and_a_second_forces(tmp_path: Path) -> None:
    with Sink() as sink:
        sink.answer("/hold", Reply(hang=True))
        gateway = GatewayProcess(tmp_path, CSJD_DRAIN_TIMEOUT_S="30").start()
        try:
            gateway.put_target("hold", url=sink.url("/hold"), timeout_s=120)
            gateway.post_job("k", "hold", 1)
            sink.wait_for(lambda got: len(got) == 1)  # the delivery is held by the sink

            gateway.signal(signal.SIGINT)
            draining = _wait_event(gateway, "draining")
            assert draining["deliveries_in_flight"] == 1
            assert draining["detail"] == (
                "stopping, waiting for 1 delivery in flight (up to 30 s); "
                "Ctrl-C again to stop at once"
            )
            assert gateway.proc is not None and gateway.proc.poll() is None  # it waits

            forced_at = time.monotonic()
            gateway.signal(signal.SIGINT)
            assert gateway.wait(10) == 128 + signal.SIGINT
            assert time.monotonic() - forced_at < 5
            assert _wait_event(gateway, "forced_exit")["deliveries_in_flight"] == 1
            # (that the job cut off is sent again: test_lifecycle.py, a second signal)
        finally:
            gateway.stop()
