"""The store's pool and migrations, against the real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg

from hub.store.migrations import migrate, migration_files, version_of
from tests.support import create_database, drop_database


async def test_pinned_runs_a_block_on_one_connection(hub_server):
    store = hub_server.hub.store
    async with store.pinned():
        pids = {await store.fetchval("SELECT pg_backend_pid()") for _ in range(5)}
    assert len(pids) == 1

    # Outside a pinned block concurrent calls spread over the pool.
    async def held_pid() -> int:
        async with store.connection() as conn:
            await asyncio.sleep(0.05)  # hold it so the others need their own
            return int(await conn.fetchval("SELECT pg_backend_pid()"))

    assert len(set(await asyncio.gather(*(held_pid() for _ in range(3))))) == 3


async def test_concurrent_start_ups_apply_each_migration_once():
    dsn = await create_database()
    try:
        results = await asyncio.gather(*(migrate(dsn) for _ in range(4)))
        applied = [version for result in results for version in result]
        assert sorted(applied) == [version_of(path) for path in migration_files()]
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        finally:
            await conn.close()
        assert [r["version"] for r in rows] == [version_of(path) for path in migration_files()]
    finally:
        await drop_database(dsn)
