"""Shared reads: concurrent identical reads run once.

When many callers ask for the same view at once (every agent of a team
polling ``GET /v1/status``), :class:`SharedReads` runs the read once for
all of them. It never serves a caller a result older than its request: a
caller that arrives while a run is already under way waits for the *next*
run, which starts when the current one ends and serves everyone who
arrived meanwhile. So each caller sees everything committed before it
asked (an agent that just sent mail sees it in its status), at most two
runs per key exist at a time, and under load the number of runs per key is
bounded by how long one run takes, not by how many callers there are.

Callers share the result object: they must treat it as read-only. A run
that fails fails every caller it serves; the next caller starts afresh. A
caller that is cancelled does not cancel the run others are waiting on.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

Read = Callable[[], Awaitable[Any]]


@dataclass(slots=True)
class _Key:
    running: asyncio.Future[Any] | None = None
    queued: asyncio.Future[Any] | None = None
    #: The read the queued run will do (every caller of a key reads the same).
    queued_read: Read | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class SharedReads:
    def __init__(self) -> None:
        self._keys: dict[Hashable, _Key] = {}

    async def get(self, key: Hashable, read: Read) -> Any:
        """``await read()``'s result, from a run that started after this call."""
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Key()
        loop = asyncio.get_running_loop()
        if state.running is None:
            future = state.running = loop.create_future()
            self._start(key, state, read, future)
        else:
            if state.queued is None:
                state.queued = loop.create_future()
                state.queued_read = read
            future = state.queued
        return await asyncio.shield(future)

    def _start(self, key: Hashable, state: _Key, read: Read, future: asyncio.Future[Any]) -> None:
        # Nobody may be left to retrieve an error when every caller was cancelled.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        # A fresh context: the run must not use the first caller's pinned
        # connection (Store.pinned), which that caller may be using.
        task = asyncio.create_task(
            self._run(key, state, read, future), context=contextvars.Context()
        )
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    async def _run(
        self, key: Hashable, state: _Key, read: Read, future: asyncio.Future[Any]
    ) -> None:
        try:
            result = await read()
        except asyncio.CancelledError:  # shutting down: no next run either
            future.cancel()
            if state.queued is not None:
                state.queued.cancel()
            state.queued = state.queued_read = None
            raise
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        finally:
            self._next(key, state)

    def _next(self, key: Hashable, state: _Key) -> None:
        """Start the queued run, or forget the key."""
        queued, read = state.queued, state.queued_read
        state.queued = state.queued_read = None
        state.running = queued
        if queued is None or read is None:
            self._keys.pop(key, None)
            return
        self._start(key, state, read, queued)
