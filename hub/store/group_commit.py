"""Group commit: concurrent writes share a round trip and a commit.

Under load, a write that is one statement in autocommit (a mail send, a
reservation acquire or release) spends most of its database time on what
surrounds the statement rather than on the statement: a round trip, waking
the backend, setting the statement up, and a commit that flushes the WAL.
:class:`GroupCommit` queues the calls that arrive while earlier ones are
being written and hands the queue to the service's batch writer, which
writes the whole batch on one connection in one statement (one implicit
transaction, one commit): mail's ``mail_send_batch``, the reservations'
``reservation_acquire_batch`` and ``reservation_release_batch``.

Behaviour a caller can rely on:

- **Committed before it returns.** ``await group.submit(...)`` returns
  only after the batch holding its row has committed, so an ack sent after
  it is never ahead of the data.
- **No added latency when idle.** A call that finds fewer than
  ``max_inflight`` batches being written starts one at once, alone; only
  calls that arrive while that many are being written wait, and they go
  together in the next batch.
- **One call's error is its own.** If the batch fails (a constraint, a
  race with a delete), nothing of it was committed and every call of it is
  run again on its own, so each gets its own row or its own exception.
  A call whose batch failed because the database went away gets that error.
- **One result per call, in order.** A batch writer returns one result
  per call, in the calls' order.
- **Calls that collide are never batched together** (optional ``locks``:
  the ``(key, exclusive)`` locks each call takes). A call that wants a key
  some call of the batch holds, exclusively on either side, waits for a
  later batch. A set-based writer may then decide every call of a batch
  in one statement, each as it would alone: no call's outcome depends on
  another's write (reservations need this; two acquires of one path must
  be decided one after the other).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from hub import metrics
from hub.store.pool import database_unavailable
from protocol.errors import RpcError

if TYPE_CHECKING:
    from hub.store.pool import Store

#: Calls per batch at most: bounds the transaction's size and the time the
#: last call of a batch waits for the first.
MAX_BATCH = 64
#: Batches written at once (each on its own pooled connection): while one
#: is being committed the next can already execute.
MAX_INFLIGHT = 3
#: Queued calls looked at when filling a batch: bounds the work of skipping
#: calls that collide (a queue full of requests for one path).
MAX_SCAN = 4 * MAX_BATCH

_BATCH_SECONDS = metrics.DB_SECONDS.child("group_commit_batch")

_Call = tuple[tuple[Any, ...], "asyncio.Future[Any]"]

#: Writes a batch of calls' arguments on one connection, in autocommit, and
#: returns one result per call, in order.
WriteBatch = Callable[[asyncpg.Connection, list[tuple[Any, ...]]], Awaitable[Sequence[Any]]]
#: The ``(key, exclusive)`` locks a call (its arguments) takes.
Locks = Callable[[tuple[Any, ...]], Iterable[tuple[Hashable, bool]]]


class GroupCommit:
    """Write concurrent callers' changes with the batch writer given at
    construction."""

    def __init__(
        self,
        store: Store,
        write: WriteBatch,
        *,
        locks: Locks | None = None,
        max_batch: int = MAX_BATCH,
        max_inflight: int = MAX_INFLIGHT,
    ) -> None:
        self._store = store
        self._write_batch = write
        self._locks = locks
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._queue: deque[_Call] = deque()
        self._inflight: set[asyncio.Task[None]] = set()
        # Cached: on Python 3.11 every get_running_loop() is a getpid() system call.
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def queued(self) -> int:
        """Calls waiting for a batch."""
        return len(self._queue)

    async def submit(self, *args: Any) -> Any:
        """The writer's result for ``args``, committed (inside
        ``Store.use``: written alone on that transaction, committed with it)."""
        ambient = self._store.ambient
        if ambient is not None:
            return (await self._write_batch(ambient, [args]))[0]
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.append((args, future))
        if len(self._inflight) < self._max_inflight:
            # A fresh context: the writer must not inherit the caller's
            # pinned connection (Store.pinned).
            task = asyncio.create_task(self._drain(), context=contextvars.Context())
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return await future

    async def _drain(self) -> None:
        batch: list[_Call] = []
        try:
            while self._queue:
                batch = self._next_batch()
                if batch:
                    await self._write(batch)
        except BaseException as exc:
            # Cancelled at shut-down: nobody is left waiting forever.
            for _, future in [*batch, *self._queue]:
                _settle(future, exc)
            raise

    def _next_batch(self) -> list[_Call]:
        """Take the next batch off the queue: in order, skipping (for a
        later batch) each call that collides with one already taken."""
        batch: list[_Call] = []
        skipped: list[_Call] = []
        held: dict[Hashable, bool] = {}  # key -> held exclusively
        scanned = 0
        while self._queue and len(batch) < self._max_batch and scanned < MAX_SCAN:
            call = self._queue.popleft()
            scanned += 1
            # A caller that gave up (its session closed) before its write
            # started is not written.
            if call[1].done():
                continue
            if self._locks is not None:
                wanted = list(self._locks(call[0]))
                if any(key in held and (exclusive or held[key]) for key, exclusive in wanted):
                    skipped.append(call)
                    continue
                for key, exclusive in wanted:
                    held[key] = held.get(key, False) or exclusive
            batch.append(call)
        self._queue.extendleft(reversed(skipped))
        return batch

    async def _write(self, batch: list[_Call]) -> None:
        try:
            async with self._store.connection() as conn:
                started = time.perf_counter()
                rows = await self._write_batch(conn, [args for args, _ in batch])
                _BATCH_SECONDS.observe(time.perf_counter() - started)
        except Exception as exc:  # handed to the callers
            if len(batch) == 1 or isinstance(exc, RpcError) or database_unavailable(exc):
                # Alone, or the database is unreachable: the same answer for all.
                for _, future in batch:
                    _settle(future, exc)
            else:
                # Nothing of the batch was committed: find whose call failed.
                for call in batch:
                    await self._write([call])
            return
        if len(rows) != len(batch):
            error = RuntimeError(f"{len(rows)} rows for {len(batch)} executions")
            for _, future in batch:
                _settle(future, error)
            return
        for (_, future), row in zip(batch, rows, strict=True):
            if not future.done():
                future.set_result(row)


def _settle(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
