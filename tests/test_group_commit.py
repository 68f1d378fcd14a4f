"""Group commit (hub.store.group_commit) against the real PostgreSQL: many
concurrent writes share commits, each is committed before it returns, and
one write's error stays its own."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from hub.store import Store
from tests.support import create_database, drop_database

_INSERT = """
INSERT INTO grouped (n, divisor) VALUES ($1, $2)
RETURNING n, 100 / divisor AS share, txid_current() AS tx
"""


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
        row = await store.fetchrow_committed(_INSERT, n, 1)
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
    calls = [store.fetchrow_committed(_INSERT, n, 0 if n == 7 else 1) for n in range(40)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [n for n, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [7]
    assert isinstance(results[7], asyncpg.DivisionByZeroError)
    stored = await store.fetch("SELECT n FROM grouped ORDER BY n")
    assert [r["n"] for r in stored] == [n for n in range(40) if n != 7]


async def test_a_lone_write_is_not_delayed_into_a_batch(store):
    first = await store.fetchrow_committed(_INSERT, 1, 1)
    second = await store.fetchrow_committed(_INSERT, 2, 1)
    assert first["tx"] != second["tx"]


async def test_inside_a_pinned_block_the_write_uses_the_pinned_connection(store):
    async with store.pinned():
        pid = await store.fetchval("SELECT pg_backend_pid()")
        row = await store.fetchrow_committed("SELECT pg_backend_pid() AS pid FROM (SELECT) one")
    assert row["pid"] == pid
