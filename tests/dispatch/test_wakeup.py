"""Wake-ups from an API process to a dispatcher process on one SQLite file, over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from app.dispatch import wakeup


async def wait_for(event: asyncio.Event, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        await event.wait()


async def test_a_burst_of_wakes_reaches_the_listener_as_one(tmp_path: Path) -> None:
    db = tmp_path / "csjd.db"
    woken = asyncio.Event()
    count = 0

    def on_wake() -> None:
        nonlocal count
        count += 1
        woken.set()

    listener = asyncio.create_task(wakeup.listen(db, on_wake))
    sender = wakeup.WakeSender(db)
    try:
        await asyncio.sleep(0)  # let the listener bind
        for _ in range(100):  # one loop turn: one datagram
            sender()
        await wait_for(woken)
        assert count == 1
        woken.clear()
        sender()
        await wait_for(woken)
        assert count == 2
    finally:
        sender.close()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def test_waking_with_nobody_listening_is_harmless(tmp_path: Path) -> None:
    sender = wakeup.WakeSender(tmp_path / "nobody.db")
    sender()
    await asyncio.sleep(0)  # the send runs on this loop turn and must not raise
    sender.close()


async def test_each_database_file_has_its_own_channel(tmp_path: Path) -> None:
    assert wakeup.address(tmp_path / "a.db") != wakeup.address(tmp_path / "b.db")
    assert wakeup.address(tmp_path / "a.db") == wakeup.address(tmp_path / "." / "a.db")


async def test_a_second_listener_on_one_file_fails_loudly(tmp_path: Path) -> None:
    db = tmp_path / "csjd.db"
    first = asyncio.create_task(wakeup.listen(db, lambda: None))
    await asyncio.sleep(0)
    try:
        second = asyncio.create_task(wakeup.listen(db, lambda: None))
        done, _ = await asyncio.wait({second}, timeout=5)
        assert second in done and isinstance(second.exception(), OSError)
    finally:
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
