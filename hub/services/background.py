"""Work a call starts and does not wait for: timers, and the tasks they start.

Such work outlives the call, so it must not run in a copy of the call's
context (asyncio's default). The copy would carry the caller's pinned
connection or open transaction (``Store.pinned``, ``Store.use``), which by
then is back in the pool, perhaps serving another call, or committed; and
the caller's held events (``events.deferring``), which would be collected
into a list nobody publishes. Work started here runs in a fresh context
instead; its log lines name no caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger("beadhub.background")


def spawn(
    work: Coroutine[Any, Any, T],
    keep: set[asyncio.Task[Any]] | None = None,
    *,
    name: str | None = None,
) -> asyncio.Task[T]:
    """Start ``work`` as a task in a fresh context. With ``keep``, the task
    stays in that set until it is done (the loop itself keeps only a weak
    reference, and a stop cancels what the set holds)."""
    task = asyncio.get_running_loop().create_task(work, name=name, context=contextvars.Context())
    if keep is not None:
        keep.add(task)
        task.add_done_callback(keep.discard)
    return task


def later(delay: float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
    """``callback(*args)`` in ``delay`` seconds, in a fresh context."""
    return asyncio.get_running_loop().call_later(
        delay, callback, *args, context=contextvars.Context()
    )


async def stop(
    timers: Iterable[asyncio.TimerHandle] = (), tasks: Iterable[asyncio.Task[Any] | None] = ()
) -> None:
    """Cancel ``timers`` and ``tasks`` and wait for the tasks to end (a
    hub's shutdown): what a task raises on its way out is its own."""
    for handle in list(timers):
        handle.cancel()
    running = [task for task in list(tasks) if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class Batched:
    """Advisory notes taken on hot paths (delivery states, when keys were
    used), written a moment later in one go instead of once each.

    After noting something, the caller calls :meth:`arm`: the first call
    starts a ``delay`` timer, and the timer starts ``write()`` in a fresh
    context. ``write`` takes everything noted so far and writes it; it runs
    again while ``pending()`` says more was noted meanwhile. A failed write
    is logged (``what`` names it) and dropped: a note is never worth
    disturbing a call for. :meth:`flush` writes now, after any write
    under way (before reading what was noted, and when the hub stops).
    """

    def __init__(
        self,
        delay: float,
        write: Callable[[], Awaitable[None]],
        pending: Callable[[], bool],
        what: str,
    ) -> None:
        self.delay = delay
        self._write = write
        self._pending = pending
        self._what = what
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def arm(self) -> None:
        if self._handle is None and self._task is None:
            self._handle = later(self.delay, self._start)

    def _start(self) -> None:
        self._handle = None
        self._task = spawn(self._run())

    async def _run(self) -> None:
        try:
            while self._pending():
                await self._write()
        except Exception:
            logger.warning("could not record %s", self._what, exc_info=True)
        finally:
            self._task = None

    async def flush(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._pending() and self._task is None:
            self._start()
        if self._task is not None:
            await asyncio.shield(self._task)
