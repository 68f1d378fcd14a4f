"""Group commit (hub.store.group_commit) against the real PostgreSQL: many
concurrent writes share commits, each is committed before it returns, and
one write's error stays its own."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from hub.store import Store
from hub.store.group_commit import GroupCommit
from tests.support import create_database, drop_database

_INSERT = """
INSERT INTO grouped (n, divisor) VALUES ($1, $2)
RETURNING n, 100 / divisor AS share, txid_current() AS tx
"""


async def write_inserts(conn: asyncpg.Connection, calls: list[tuple[Any, ...]]) -> list[Any]:
    """A batch writer: _INSERT once per call, pipelined in one transaction."""
    return list(await conn.fetchmany(_INSERT, calls))


def insert(store: Store, n: int, divisor: int) -> Any:
    """One grouped run of _INSERT: its row, once committed."""
    return store.group_commit("insert", lambda: write_inserts).submit(n, divisor)


@pytest.fixture
async def store():
    dsn = await create_database()
    store = Store(dsn, min_size=2, max_size=4)
    await store.open()
    await store.execute("CREATE TABLE grouped (n int PRIMARY KEY, divisor int NOT NULL)")
    try:
        yield store
    finally:
        await store.close()
        await drop_database(dsn)


async def test_concurrent_writes_share_commits_and_each_is_committed_on_return(store):
    # Other connections see only what was committed.
    readers = await asyncpg.create_pool(store.dsn, min_size=1, max_size=3)

    async def write(n: int) -> asyncpg.Record:
        row = await insert(store, n, 1)
        assert await readers.fetchval("SELECT count(*) FROM grouped WHERE n = $1", n) == 1
        return row

    try:
        rows = await asyncio.gather(*(write(n) for n in range(200)))
    finally:
        await readers.close()
    assert [row["n"] for row in rows] == list(range(200))
    transactions = {row["tx"] for row in rows}
    assert len(transactions) < 100  # grouped: far fewer commits than writes
    assert await store.fetchval("SELECT count(*) FROM grouped") == 200


async def test_one_failing_write_does_not_fail_the_others_of_its_batch(store):
    calls = [insert(store, n, 0 if n == 7 else 1) for n in range(40)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [n for n, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [7]
    assert isinstance(results[7], asyncpg.DivisionByZeroError)
    stored = await store.fetch("SELECT n FROM grouped ORDER BY n")
    assert [r["n"] for r in stored] == [n for n in range(40) if n != 7]


async def test_a_lone_write_is_not_delayed_into_a_batch(store):
    first = await insert(store, 1, 1)
    second = await insert(store, 2, 1)
    assert first["tx"] != second["tx"]


async def test_calls_whose_locks_collide_are_never_in_one_batch(store):
    started, gate = asyncio.Event(), asyncio.Event()
    batches: list[list[int]] = []

    async def write(conn: asyncpg.Connection, calls: list[tuple[Any, ...]]) -> list[Any]:
        batches.append([n for n, _, _ in calls])
        if len(batches) == 1:
            started.set()
            await gate.wait()  # every later call queues meanwhile
        return [await conn.fetchval("SELECT $1::int", n) for n, _, _ in calls]

    group = GroupCommit(store, write, locks=lambda call: [(call[1], call[2])], max_inflight=1)
    # (n, key, exclusive): 1 and 2 collide; 3 and 4 share "b"; 5 wants it alone.
    calls = [(0, "gate", True), (1, "a", True), (2, "a", True), (3, "b", False),
             (4, "b", False), (5, "b", True), (6, "c", True)]  # fmt: skip
    submitted = [asyncio.create_task(group.submit(*calls[0]))]
    await started.wait()  # the first batch is being written ...
    submitted += [asyncio.create_task(group.submit(*call)) for call in calls[1:]]
    await asyncio.sleep(0.1)  # ... while the others queue up
    gate.set()
    assert await asyncio.gather(*submitted) == [n for n, _, _ in calls]
    assert batches == [[0], [1, 3, 4, 6], [2, 5]]
