"""The tasks of ``/mcp``: rows in the store (hub.services.tool_tasks), so
any instance behind the load balancer answers ``tasks/get`` and
``tasks/cancel``; each wait runs on the instance that took the call, or on
the one that adopted it after that instance died.

A cancel on another instance reaches the runner by the bus (the
``tool_tasks`` doorbell); cancelling the runner cancels its service call,
which ends the wait on the hub (the chat's "waiting" mark, the place in
line) as a disconnect does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from hub.services import background, tool_tasks
from hub.services.context import Actor, Hub
from hub.transport.mcp import tasks, tools
from hub.transport.rpc import Call, dispatch
from protocol.methods import CATALOGUE

logger = logging.getLogger("beadhub.mcp")

#: Writes that take an idempotency key.
_RETRYABLE = frozenset(n for n, m in CATALOGUE.items() if "idempotency_key" in m.model_fields)

#: Finds the hub and the authenticated agent of a request.
ActorFor = Callable[[tasks.Context], tuple[Hub, Actor]]


class TaskCaller:
    """A task's calls, in-process. A write that takes a key gets one made
    from the task id, so the instance that adopts the task and repeats it
    (``escalate``'s escalations.create) applies it once."""

    def __init__(self, hub: Hub, actor: Actor, task_id: str) -> None:
        self._call = Call(hub, actor)
        self._task_id = task_id

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        # A waiting call is never keyed: it is not repeated with these params.
        if method in _RETRYABLE and "wait" not in params:
            params = {**params, "idempotency_key": f"task:{self._task_id}:{method}"}
        return await dispatch(self._call, method, params)

    async def wait(self, method: str, params: dict[str, Any]) -> Any:
        return await self.call(method, params)


def _view(row: asyncpg.Record) -> tasks.View:
    return tasks.View(
        task_id=row["id"],
        status=row["status"],
        waiting_for=row["waiting_for"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deadline=row["deadline"],
        expires_at=row["expires_at"],
        result=row["result"],
        error=row["error"],
    )


class StoreTasks:
    def __init__(self, actor_for: ActorFor) -> None:
        self._actor_for = actor_for
        self._running: dict[str, asyncio.Task[None]] = {}
        self._rechecks: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def running(self, hub: Hub) -> AsyncIterator[None]:
        """Hear cancels from every instance (and after a bus gap, ask the
        store which were lost); on the way out, leave this instance's
        waits to be adopted elsewhere."""

        def on_gap(_seconds: float) -> None:
            background.spawn(self._recheck(hub), self._rechecks)

        await hub.relay.add(tool_tasks.CHANNEL, self._on_message, on_gap=on_gap)
        try:
            yield
        finally:
            await hub.relay.remove(tool_tasks.CHANNEL, self._on_message)
            left = list(self._running)
            for runner in list(self._running.values()):
                runner.cancel()
            if self._running:
                await asyncio.wait(list(self._running.values()))
            with contextlib.suppress(Exception):
                await tool_tasks.release(hub, left)

    async def _recheck(self, hub: Hub) -> None:
        """The bus may have lost cancels: stop the waits of tasks the store
        says are over."""
        try:
            over = await tool_tasks.ended(hub, list(self._running))
        except Exception as exc:
            logger.warning("could not re-check running tasks after a bus gap: %s", exc)
            return
        for task_id in over:
            runner = self._running.get(task_id)
            if runner is not None:
                runner.cancel()

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") == tool_tasks.CANCELLED:
            runner = self._running.get(message.get("task_id") or "")
            if runner is not None:
                runner.cancel()

    async def start(
        self, ctx: tasks.Context, name: str, arguments: dict[str, Any], plan: tools.WaitPlan
    ) -> tasks.View:
        hub, actor = self._actor_for(ctx)
        row = await tool_tasks.create(
            hub,
            actor,
            tool=name,
            resume_tool=plan.resume_tool,
            resume_arguments=plan.resume_arguments,
            waiting_for=plan.waiting_for,
            wait=plan.seconds,
        )
        self._spawn(hub, actor, row["id"], name, arguments)
        return _view(row)

    def _spawn(
        self, hub: Hub, actor: Actor, task_id: str, name: str, arguments: dict[str, Any]
    ) -> None:
        runner = background.spawn(self._run(hub, actor, task_id, name, arguments))
        self._running[task_id] = runner
        runner.add_done_callback(lambda _t: self._running.pop(task_id, None))

    async def _run(
        self, hub: Hub, actor: Actor, task_id: str, name: str, arguments: dict[str, Any]
    ) -> None:
        try:
            result = await tasks.execute(TaskCaller(hub, actor, task_id), name, arguments)
        except asyncio.CancelledError:
            raise  # cancelled (already so in the store), or this instance stops
        except Exception:
            logger.exception("task %s (%s) failed", task_id, name)
            await tool_tasks.finish(hub, task_id, "failed", error=tasks.internal_error())
        else:
            await tool_tasks.finish(hub, task_id, "completed", result=result)

    async def get(self, ctx: tasks.Context, task_id: str) -> tasks.View:
        hub, actor = self._actor_for(ctx)
        row = await tool_tasks.get(hub, actor, task_id)
        if await tool_tasks.orphaned(hub, row, row["id"] in self._running):
            taken = await tool_tasks.adopt(hub, actor, row)
            if taken is not None:
                self._resume(hub, actor, taken)
                row = taken
        return _view(row)

    def _resume(self, hub: Hub, actor: Actor, row: asyncpg.Record) -> None:
        """Wait again, from the store, until the task's deadline (a wait
        that is over still reads once what came meanwhile)."""
        remaining = (row["deadline"] - datetime.now(UTC)).total_seconds()
        arguments = {**row["resume_arguments"], "wait": max(remaining, 0.01)}
        logger.info("adopting task %s (%s)", row["id"], row["resume_tool"])
        self._spawn(hub, actor, row["id"], row["resume_tool"], arguments)

    async def cancel(self, ctx: tasks.Context, task_id: str) -> tasks.View:
        hub, actor = self._actor_for(ctx)
        row = await tool_tasks.cancel(hub, actor, task_id)
        return _view(row)
