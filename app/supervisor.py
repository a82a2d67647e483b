"""Keeps the gateway's background loops alive, and says when one is not.

Each loop (the dispatcher's claim loop, its lease heartbeat, maintenance) is
an owned task started through ``Supervisor.start``. If it raises, the error is
logged, the loop is reported down (``/readyz`` answers 503 while it is), and
it is restarted after a backoff that doubles from 0.1 s up to 10 s and resets
once a run has lasted a minute. A loop that returns has finished its work (the
gateway is stopping). ``stop`` cancels whatever still runs and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("csjd.supervisor")

FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 10.0
HEALTHY_RUN_S = 60.0


class Supervisor:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._status: dict[str, str] = {}

    def start(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        self._status[name] = "ok"
        self._tasks[name] = asyncio.create_task(self._keep(name, loop), name=f"csjd-{name}")

    def status(self) -> dict[str, str]:
        """``ok``, ``stopped`` or ``restarting``; why a loop went down is in the log
        (``loop_crashed``), never here: ``/readyz`` shows this to anyone."""
        return dict(self._status)

    async def _keep(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        backoff = FIRST_BACKOFF_S
        while True:
            started = time.monotonic()
            try:
                await loop()
            except asyncio.CancelledError:
                self._status[name] = "stopped"
                raise
            except Exception:
                if time.monotonic() - started >= HEALTHY_RUN_S:
                    backoff = FIRST_BACKOFF_S
                self._status[name] = "restarting"
                log.exception("loop_crashed", extra={"loop": name, "restart_in_s": backoff})
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                self._status[name] = "ok"
                log.info("loop_restarted", extra={"loop": name})
                continue
            self._status[name] = "stopped"
            return

    async def finish(self, name: str, timeout_s: float) -> None:
        """Wait for a loop that was asked to end to return; cancel it after ``timeout_s``."""
        task = self._tasks.get(name)
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.warning("loop_did_not_finish", extra={"loop": name})
        await self.stop(name)

    async def stop(self, name: str | None = None) -> None:
        names = [name] if name is not None else list(self._tasks)
        for n in names:
            task = self._tasks.pop(n, None)
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
