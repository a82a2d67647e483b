"""``csjd serve --workers 2``: one gateway over two processes on one database, started,
watched and stopped by one command.

``run_workers`` is the parent, and all it does is that. It binds the API's
address (``--host``/``--port``) and the dispatcher's (``--dispatcher-port``,
by default a free port on the same host), so a taken port is one
``StartFailed`` line before anything starts; migrates the database once, by
running ``csjd migrate`` (which holds both duty locks meanwhile, so a
database another gateway holds stops it here); then starts two workers,
each a ``csjd serve`` of its own (``--role api`` and ``--role dispatcher``),
handing each its socket and a pipe to say it is up on (``app/seat.py``). Once
both are, it logs ``workers_started``. A ``SIGTERM`` or ``SIGINT`` is passed
on to both, so each drains as one process does (``app/serve.py``: the first
makes it a lame duck, a second forces), and the parent exits 0 if both did.
The workers run in process groups of their own, so a Ctrl-C reaches them
through the parent only, once. A worker that exits unasked is named in
``worker_died``; the other is stopped the same way, and the parent exits
non-zero. One still running ``KILL_MARGIN_S`` past its own stop budget is
killed (``worker_killed``). The workers die with the parent: a ``kill -9`` of
the parent is one of the whole gateway, and leases bring back on the next
start whatever it cut off.

Why two and no more (``refusal``): every write to a SQLite file is one
``BEGIN IMMEDIATE`` transaction at a time whichever process runs it, and the
store's statements are the ones Postgres replicas share, so a second API
process would keep the data safe, and the port could be handed to both. But
each process keeps its own metrics, and its own breaker and limit state, so
behind one port a scrape of ``/metrics`` would read whichever process took
the connection: counters would seem to jump back and forth. On one file the
API processes would also queue for the one write lock. Postgres replicas
are the way past two processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from app.seat import Seat
from app.settings import ProcessRole, Settings
from app.startup import listen, url_of

log = logging.getLogger("csjd")

#: the processes ``--workers`` may ask for: one, or an API and a dispatcher
MAX_WORKERS = 2
#: how long past its own stop budget (``shutdown_budget_s``) a worker may run before it is killed
KILL_MARGIN_S = 2.0
#: the exit status when a worker exited unasked (unless it gave one of its own)
WORKER_DIED = 1
#: the roles of the workers, in the order they start
ROLES = (ProcessRole.API, ProcessRole.DISPATCHER)
#: the signals passed on to the workers (as ``app/serve.py`` handles them)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def refusal(args: argparse.Namespace, settings: Settings) -> str | None:
    """Why this ``csjd serve`` cannot run as asked (one line), or None."""
    workers = args.workers
    internal = (args.worker_of, args.listen_fd, args.ready_fd)
    if any(x is not None for x in internal) and not all(x is not None for x in internal):
        return "--worker-of, --listen-fd and --ready-fd are for the workers of --workers"
    if workers is not None and args.role is not None:
        return (
            "--workers and --role: choose one (--workers 2 starts an api and a "
            "dispatcher process itself)"
        )
    if workers is not None and workers < 1:
        return f"--workers {workers}: give 1 (one process) or 2 (an api and a dispatcher process)"
    if workers is not None and workers > MAX_WORKERS:
        return (
            f"--workers {workers}: at most {MAX_WORKERS}, an api and a dispatcher process; "
            "more api processes behind one port would each answer /metrics with their "
            "own counts and queue for SQLite's one writer (replicas on Postgres go further)"
        )
    if args.dispatcher_port is not None and workers != MAX_WORKERS:
        return "--dispatcher-port is the dispatcher process's port: only with --workers 2"
    if workers == MAX_WORKERS and _in_memory(settings):
        return (
            "--workers 2 needs a SQLite file or Postgres: two processes cannot "
            "share a database in memory"
        )
    return None


def _in_memory(settings: Settings) -> bool:
    if settings.is_postgres:
        return False
    from app.storage.sqlite import sqlite_path

    return sqlite_path(settings.database_url) is None


def run_workers(settings: Settings, host: str, port: int, dispatcher_port: int) -> int:
    """Bind both addresses, migrate, run both workers until they stop; the exit
    status. ``StartFailed`` when it cannot start."""
    sockets = [listen(host, port)]
    try:
        sockets.append(listen(host, dispatcher_port, option="--dispatcher-port"))
        # ``csjd migrate`` says why it cannot (a database in use or out of reach) on
        # one line of its own; run apart, it leaves the parent none of its imports
        migrated = subprocess.run([sys.executable, "-m", "app", "migrate"], check=False)
        if migrated.returncode != 0:
            return migrated.returncode if migrated.returncode > 0 else WORKER_DIED
        return asyncio.run(_run(settings, sockets))
    finally:
        for sock in sockets:
            sock.close()


@dataclass(slots=True)
class Worker:
    """One worker process, and what the parent knows of it."""

    role: ProcessRole
    proc: asyncio.subprocess.Process
    url: str
    #: True once it accepts connections; False if it exited before
    ready: asyncio.Future[bool]
    ready_fd: int

    def send(self, sig: signal.Signals) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def close(self) -> None:
        """Stop listening on its pipe (once it said it is up, or died)."""
        if self.ready_fd >= 0:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self.ready_fd)
            os.close(self.ready_fd)
            self.ready_fd = -1
        if not self.ready.done():
            self.ready.set_result(False)


async def _spawn(role: ProcessRole, sock: socket.socket) -> Worker:
    read_fd, write_fd = os.pipe()
    seat = Seat(parent_pid=os.getpid(), listen_fd=sock.fileno(), ready_fd=write_fd)
    argv = [sys.executable, "-m", "app", "serve", "--role", role.value, *seat.argv()]
    try:
        # From this (the main) thread: the kernel's parent-death signal follows the
        # thread that started a child, and the main thread lasts as long as the parent.
        # A group of its own: a Ctrl-C reaches the parent only, which passes it on once.
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            pass_fds=(sock.fileno(), write_fd),
            process_group=0,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    loop = asyncio.get_running_loop()
    worker = Worker(role, proc, url_of(sock), loop.create_future(), read_fd)

    def readable() -> None:
        try:
            said = os.read(read_fd, 1)
        except OSError:
            said = b""
        if not worker.ready.done():
            worker.ready.set_result(said == b"1")
        worker.close()

    loop.add_reader(read_fd, readable)
    return worker


async def _run(settings: Settings, sockets: list[socket.socket]) -> int:
    workers: list[Worker] = []
    try:
        for role, sock in zip(ROLES, sockets, strict=True):
            workers.append(await _spawn(role, sock))
    except BaseException:
        for worker in workers:
            worker.send(signal.SIGKILL)
            await worker.proc.wait()
            worker.close()
        raise
    finally:
        # the workers hold the sockets now: once they close theirs, nothing listens
        for sock in sockets:
            sock.close()
    return await _Watch(settings, workers).run()


class _Watch:
    """The parent's watch over its workers, from their start to their exit."""

    def __init__(self, settings: Settings, workers: list[Worker]) -> None:
        self._settings = settings
        self._workers = workers
        self._stopping = False
        self._died: Worker | None = None
        self._killer: asyncio.TimerHandle | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        exits = {asyncio.ensure_future(w.proc.wait()): w for w in self._workers}
        try:
            await self._started(set(exits))
            pending = set(exits)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self._exited(exits[task])
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
            if self._killer is not None:
                self._killer.cancel()
            for worker in self._workers:
                worker.close()
        return self._status()

    async def _started(self, exits: set[asyncio.Future[int]]) -> None:
        """Wait until every worker is up (then log it), or one exited first."""
        ready = asyncio.gather(*(w.ready for w in self._workers))
        waited: set[asyncio.Future[Any]] = {ready, *exits}
        await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done() or not all(ready.result()) or self._stopping:
            return
        api, dispatcher = self._workers
        log.info(
            "workers_started",
            extra={
                "workers": len(self._workers),
                "url": api.url,
                "api_pid": api.proc.pid,
                "dispatcher_url": dispatcher.url,
                "dispatcher_pid": dispatcher.proc.pid,
                "database": self._settings.database_shown,
            },
        )

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info(
            "workers_stopping" if not self._stopping else "workers_forced",
            extra={"signal": sig.name, "workers": self._alive()},
        )
        self._stop(sig)

    def _stop(self, sig: signal.Signals) -> None:
        for worker in self._workers:
            worker.send(sig)
        if not self._stopping:
            self._stopping = True
            # imported only now (uvicorn, the gateway): the parent stays small meanwhile
            from app.serve import shutdown_budget_s

            budget_s = shutdown_budget_s(self._settings) + KILL_MARGIN_S
            self._killer = asyncio.get_running_loop().call_later(budget_s, self._kill, budget_s)

    def _kill(self, budget_s: float) -> None:
        for worker in self._workers:
            if worker.proc.returncode is None:
                log.error(
                    "worker_killed",
                    extra={
                        "worker": worker.role.value,
                        "pid": worker.proc.pid,
                        "detail": f"still running {budget_s:g} s after it was told to stop",
                    },
                )
                worker.send(signal.SIGKILL)

    def _exited(self, worker: Worker) -> None:
        if self._stopping:
            return
        self._died = worker
        came_up = worker.ready.done() and worker.ready.result()
        what = "exited unasked" if came_up else "stopped before it was up"
        others = " and ".join(w.role.value for w in self._workers if w is not worker)
        log.error(
            "worker_died",
            extra={
                "worker": worker.role.value,
                "pid": worker.proc.pid,
                "status": worker.proc.returncode,
                "detail": f"the {worker.role.value} process {what}; stopping the {others} process",
            },
        )
        self._stop(signal.SIGTERM)

    def _alive(self) -> list[str]:
        return [w.role.value for w in self._workers if w.proc.returncode is None]

    def _status(self) -> int:
        """0 when every worker stopped cleanly when asked; else the first worker's
        own status (128 + the signal that ended it), or ``WORKER_DIED``."""
        statuses = {w.role.value: w.proc.returncode for w in self._workers}
        log.info("workers_stopped", extra={"statuses": statuses})
        if self._died is not None:
            code = self._died.proc.returncode or 0
            return code if code > 0 else WORKER_DIED
        code = next((c for c in statuses.values() if c), 0) or 0
        return 128 - code if code < 0 else code
