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
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


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
