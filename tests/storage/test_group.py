"""How the group committer makes its batches: what joins a transaction, and when
one starts. A recording database behind the ``Database`` seam counts the
transactions; what a transaction does on a real database is the store
contract's business (``test_store_contract.py``, ``test_faults.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.storage.engine import Unit
from app.storage.group import GATHER_PASSES, GroupCommitter, Tx


class RecordingDatabase:
    """Runs each unit at once, on no connection, and keeps what each transaction held."""

    def __init__(self, *, in_thread: bool = True) -> None:
        self.transactions: list[list[str]] = []
        self._current: list[str] | None = None
        self.writes_in_thread = in_thread

    @property
    def dialect(self) -> Any:
        raise NotImplementedError

    async def write(self, unit: Unit[Any]) -> Any:
        self._current = []
        try:
            return await unit(None)  # type: ignore[arg-type]
        finally:
            self.transactions.append(self._current)
            self._current = None

    async def read(self, unit: Unit[Any]) -> Any:
        return await unit(None)  # type: ignore[arg-type]

    async def close(self) -> None:
        pass

    def note(self, name: str) -> str:
        assert self._current is not None, "an operation ran outside a transaction"
        self._current.append(name)
        return name


@pytest.fixture
async def committer() -> AsyncIterator[tuple[GroupCommitter, RecordingDatabase]]:
    database = RecordingDatabase()
    group = GroupCommitter(database, max_batch=8)  # type: ignore[arg-type]
    await group.start()
    yield group, database
    await group.stop()


def op(database: RecordingDatabase, name: str) -> Any:
    async def run(tx: Tx) -> str:
        return database.note(name)

    return run


async def later(passes: int) -> None:
    for _ in range(passes):
        await asyncio.sleep(0)


async def submit_after(
    group: GroupCommitter, database: RecordingDatabase, passes: int, name: str
) -> str:
    """``name``'s operation, handed to ``group`` after ``passes`` passes of the loop."""
    await later(passes)
    return await group.run(op(database, name))


async def test_operations_arriving_over_the_next_passes_share_the_transaction(
    committer: tuple[GroupCommitter, RecordingDatabase],
) -> None:
    group, database = committer

    names = [f"op{i}" for i in range(4)]
    results = await asyncio.gather(
        *(submit_after(group, database, i, n) for i, n in enumerate(names))
    )

    assert results == names
    assert database.transactions == [names]


async def test_a_pass_that_brings_nothing_starts_the_transaction(
    committer: tuple[GroupCommitter, RecordingDatabase],
) -> None:
    group, database = committer

    # "late" arrives after passes that brought nothing: it is the next batch's
    await asyncio.gather(
        submit_after(group, database, 0, "first"), submit_after(group, database, 4, "late")
    )

    assert database.transactions == [["first"], ["late"]]


async def test_a_batch_gathers_for_a_bounded_number_of_passes() -> None:
    database = RecordingDatabase()
    group = GroupCommitter(database, max_batch=10 * GATHER_PASSES)  # type: ignore[arg-type]
    await group.start()
    pending = []
    try:
        for i in range(3 * GATHER_PASSES):  # one more operation every pass
            pending.append(asyncio.ensure_future(group.run(op(database, f"op{i}"))))
            await asyncio.sleep(0)
        results = list(await asyncio.gather(*pending))
    finally:
        await group.stop()

    assert len(results) == 3 * GATHER_PASSES
    assert len(database.transactions) > 1, "one stream of operations never ends a batch"
    assert max(len(t) for t in database.transactions) <= GATHER_PASSES + 2
    assert [name for t in database.transactions for name in t] == results


async def test_a_full_batch_starts_without_waiting_for_more(
    committer: tuple[GroupCommitter, RecordingDatabase],
) -> None:
    group, database = committer
    names = [f"op{i}" for i in range(20)]

    await asyncio.gather(*(group.run(op(database, n)) for n in names))

    assert [len(t) for t in database.transactions] == [8, 8, 4]


async def test_stopping_while_a_batch_gathers_answers_its_callers() -> None:
    database = RecordingDatabase()
    group = GroupCommitter(database)  # type: ignore[arg-type]
    await group.start()
    waiting = asyncio.ensure_future(group.run(op(database, "taken")))
    behind = asyncio.ensure_future(later(3))
    await asyncio.sleep(0)  # the writer has taken "taken" and gathers for more

    await group.stop()
    await behind

    with pytest.raises(RuntimeError, match="the store is clos"):
        await asyncio.wait_for(waiting, timeout=5)
    assert database.transactions == []


async def test_a_database_written_on_the_loop_starts_each_batch_at_once() -> None:
    database = RecordingDatabase(in_thread=False)
    group = GroupCommitter(database)  # type: ignore[arg-type]
    await group.start()
    try:
        await asyncio.gather(
            submit_after(group, database, 0, "first"), submit_after(group, database, 1, "next")
        )
    finally:
        await group.stop()

    assert database.transactions == [["first"], ["next"]]
