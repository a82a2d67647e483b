"""Child processes: starting one with its output in a log file in the run's
temporary directory, waiting until it answers, stopping it (SIGTERM, then a
kill past a deadline), remembering every one started so that a failed run
leaves none behind, and sampling its RSS and CPU (with its children's) from
``/proc``. It knows
nothing of csjd (``gateway`` starts csjd through it) nor of what a scenario
measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.harness import BenchError, say

#: bench/, where the sink and the bare app are, and where ``git describe`` runs
BENCH_DIR = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_DEADLINE_S = 30.0
STOP_DEADLINE_S = 60.0
POLL_S = 0.05
#: uvicorn exits 0 after a graceful shutdown, or re-raises the signal it caught
CLEAN_EXITS = (0, -signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    """A child process whose stdout and stderr go to a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    base_url: str

    @classmethod
    def start(
        cls, name: str, argv: Sequence[str], *, port: int, tmp: Path, env: dict[str, str]
    ) -> Service:
        log_path = tmp / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                list(argv),
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        service = cls(name=name, proc=proc, log_path=log_path, base_url=f"http://{HOST}:{port}")
        STARTED.append(service)
        return service

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchError(
                f"{self.name} exited with status {code}; its log ends:\n{self.log_tail()}"
            )

    async def wait_ready(self, session: aiohttp.ClientSession, path: str) -> None:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            self.check_alive()
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(self.base_url + path) as response:
                    await response.read()
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.name} did not answer 200 on {path} within {READY_DEADLINE_S:g}s; "
                    f"its log ends:\n{self.log_tail()}"
                )
            await asyncio.sleep(POLL_S)

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Signal the process and wait for it (killing it after the deadline)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return await asyncio.to_thread(self.proc.wait, STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop within {STOP_DEADLINE_S:g}s of {sig.name}; killing it")
            self.proc.kill()
            return await asyncio.to_thread(self.proc.wait)

    def kill_if_alive(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


#: every service started, so that ``cli.main`` can kill what an error left running
STARTED: list[Service] = []


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The parent's environment without any ``CSJD_*`` or ``OTEL_*`` variable (a
    csjd exports traces only where a scenario says so), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CSJD_", "OTEL_"))}
    env.update(extra)
    return env


@dataclass(frozen=True)
class ProcSample:
    peak_rss_mb: float
    rss_mb: float
    cpu_s: float
    #: of which the main thread's: csjd's event loop (the rest is its SQLite
    #: threads, and a delivery client's own thread if it has one)
    loop_cpu_s: float = 0.0


def sample_proc(pid: int) -> ProcSample:
    """Peak and current RSS (``VmHWM``, ``VmRSS``) and user+system CPU, from /proc."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
    tick = os.sysconf("SC_CLK_TCK")
    return ProcSample(
        peak_rss_mb=fields["VmHWM"],
        rss_mb=fields["VmRSS"],
        cpu_s=_ticks(Path(f"/proc/{pid}/stat")) / tick,
        loop_cpu_s=_ticks(Path(f"/proc/{pid}/task/{pid}/stat")) / tick,
    )


def _ticks(stat_file: Path) -> int:
    """utime + stime (fields 14 and 15) of a process's or a thread's stat file."""
    stat = stat_file.read_text()
    rest = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
    return int(rest[11]) + int(rest[12])


def children(pid: int) -> list[int]:
    """The processes ``pid``'s main thread started and that still run (``csjd serve
    --workers``: its workers), from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def sample_tree(pid: int) -> ProcSample:
    """``sample_proc`` summed over ``pid`` and its children: a process's own and
    its workers' memory and CPU, if it has any."""
    samples = [sample_proc(p) for p in (pid, *children(pid))]
    return ProcSample(
        peak_rss_mb=sum(s.peak_rss_mb for s in samples),
        rss_mb=sum(s.rss_mb for s in samples),
        cpu_s=sum(s.cpu_s for s in samples),
        loop_cpu_s=sum(s.loop_cpu_s for s in samples),
    )


def report_exit(gateway: Service, code: int) -> None:
    if code not in CLEAN_EXITS:
        say(
            f"{gateway.name} exited with status {code} on SIGTERM; its log ends:\n"
            f"{gateway.log_tail()}"
        )
