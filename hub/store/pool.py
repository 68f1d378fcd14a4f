"""The asyncpg pool every service shares.

Services take connections from :attr:`Store.pool` and write plain SQL. JSON
columns are decoded with orjson; ``uuid`` values come back as strings so
that ids cross the wire unchanged.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import orjson

from hub import metrics
from hub.store.shared_read import SharedReads
from protocol.errors import RpcError, unavailable

if TYPE_CHECKING:
    from hub.store.group_commit import GroupCommit, Locks, WriteBatch

T = TypeVar("T")

_STATEMENT_SECONDS = metrics.DB_SECONDS.child("statement")

#: Errors that mean "the database cannot be reached", as opposed to a bad query.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncio.TimeoutError,
)


def database_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, RpcError)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )
    await conn.set_type_codec("uuid", encoder=str, decoder=str, schema="pg_catalog", format="text")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's default reset (advisory unlock,
    CLOSE ALL, UNLISTEN, RESET ALL: one more round trip on every release).
    Pooled connections carry no session state to reset: services use
    transactions, ``SET LOCAL`` and ``pg_advisory_xact_lock`` only, never a
    plain ``SET``, a session advisory lock or ``LISTEN``. asyncpg still rolls
    back a transaction left open."""


class Store:
    """Owns the pool. ``await store.open()`` before use, ``close()`` after."""

    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 20) -> None:
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._pinned: ContextVar[asyncpg.Connection | None] = ContextVar(
            f"beadhub_pinned_{id(self)}", default=None
        )
        self._ambient: ContextVar[asyncpg.Connection | None] = ContextVar(
            f"beadhub_ambient_{id(self)}", default=None
        )
        self._groups: dict[str, GroupCommit] = {}
        self._shared = SharedReads()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Store.open() was not awaited")
        return self._pool

    async def open(self) -> None:
        from hub.store.migrations import migrate

        await migrate(self.dsn)
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            init=_init_connection,
            reset=_keep_session,
            command_timeout=30,
            # Fail fast when the database is down so callers get
            # "unavailable" instead of hanging.
            timeout=5,
            server_settings={"application_name": f"beadhub-{os.getpid()}"},
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        pinned = self._pinned.get()
        if pinned is not None:
            yield pinned
            return
        try:
            async with self.pool.acquire() as conn:
                yield conn
        except CONNECTION_ERRORS as exc:
            raise unavailable() from exc

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[None]:
        """Run the store calls of this block on one pooled connection.

        A call that reads many things one after another (the team status)
        otherwise takes and returns a connection per query, and under load
        queues for the pool once per query instead of once. Only for
        sequential code: tasks started inside the block inherit the pin and
        must not run queries concurrently on it.
        """
        if self._pinned.get() is not None:
            yield
            return
        async with self.connection() as conn:
            token = self._pinned.set(conn)
            try:
                yield
            finally:
                self._pinned.reset(token)

    @asynccontextmanager
    async def use(self, conn: asyncpg.Connection) -> AsyncIterator[None]:
        """Run every store call of this block on ``conn``, an open
        transaction (hub.services.idempotency): reads, ``change`` blocks
        (savepoints) and group-commit writes, which are then written on it
        directly instead of batched."""
        pinned = self._pinned.set(conn)
        ambient = self._ambient.set(conn)
        try:
            yield
        finally:
            self._ambient.reset(ambient)
            self._pinned.reset(pinned)

    @property
    def ambient(self) -> asyncpg.Connection | None:
        """The transaction of an enclosing :meth:`use`, if any."""
        return self._ambient.get()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            started = time.perf_counter()
            rows = await conn.fetch(query, *args)
            _STATEMENT_SECONDS.observe(time.perf_counter() - started)
            return rows

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            started = time.perf_counter()
            row = await conn.fetchrow(query, *args)
            _STATEMENT_SECONDS.observe(time.perf_counter() - started)
            return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.connection() as conn:
            started = time.perf_counter()
            value = await conn.fetchval(query, *args)
            _STATEMENT_SECONDS.observe(time.perf_counter() - started)
            return value

    def stats(self) -> dict[str, int]:
        """Pool use and queued group-commit calls, for /metrics."""
        pool = self._pool
        return {
            "size": pool.get_size() if pool is not None else 0,
            "idle": pool.get_idle_size() if pool is not None else 0,
            "max": self.max_size,
            "group_commit_queued": sum(g.queued for g in self._groups.values()),
        }

    def group_commit(
        self, key: str, writer: Callable[[], WriteBatch], locks: Locks | None = None
    ) -> GroupCommit:
        """The :class:`~hub.store.group_commit.GroupCommit` named ``key``,
        made with the batch writer ``writer()`` (and ``locks``) on first use."""
        group = self._groups.get(key)
        if group is None:
            from hub.store.group_commit import GroupCommit

            group = self._groups[key] = GroupCommit(self, writer(), locks=locks)
        return group

    async def read_shared(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """``await read()``, run once for concurrent callers of the same
        ``key`` (see :mod:`hub.store.shared_read`): never older than the
        call, shared and read-only."""
        result: T = await self._shared.get(key, read)
        return result

    async def execute(self, query: str, *args: Any) -> str:
        async with self.connection() as conn:
            started = time.perf_counter()
            status: str = await conn.execute(query, *args)
            _STATEMENT_SECONDS.observe(time.perf_counter() - started)
            return status

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2):
                return await self.fetchval("SELECT 1") == 1
        except (RpcError, *CONNECTION_ERRORS):  # type: ignore[misc]
            return False
