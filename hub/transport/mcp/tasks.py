"""The MCP Tasks extension (``io.modelcontextprotocol/tasks``, SEP-2663) for
the 2026-07-28 revision: a waiting tool call runs as a task.

When a ``tools/call`` declares the extension in its per-request
capabilities and is a wait (:func:`tools.wait_plan`: ``chat_send`` /
``chat_reply`` with ``wait``, ``chat_wait``, ``escalate`` with ``wait``,
``claim`` / ``reserve`` with ``wait``), the answer is a ``CreateTaskResult``
at once; the wait runs in the background and the client polls
``tasks/get`` (status ``working``, then ``completed`` with the tool's
result, ``failed`` or ``cancelled``) and may ``tasks/cancel``. Any other
call, and every call of a client that does not declare the extension (a
2025-11-25 client among them), is the ordinary tool call, with progress and
cancellation as before.

This module translates; where a task lives is a :class:`Backend`: the
store for ``/mcp`` (hub.transport.mcp.endpoint, any instance answers),
this process for the stdio server (:class:`LocalTasks`: one client, one
agent, gone with the process).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import mcp_types as types
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding, RequestHandler, compose_tool_call_handler
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from hub.transport.mcp import tools
from protocol.errors import ErrorCode, RpcError, not_found

logger = logging.getLogger("beadhub.mcp")

EXTENSION = "io.modelcontextprotocol/tasks"
#: The revisions whose clients may declare it.
VERSIONS = frozenset(MODERN_PROTOCOL_VERSIONS)
#: The polling interval we suggest: an answer is seen within a second.
POLL_MS = 1000
#: How long a task is kept after its wait's deadline (as the store keeps
#: them: hub.services.tool_tasks, not imported by the stdio server).
KEEP_SECONDS = 3600

Context = ServerRequestContext[Any, Any]


@dataclass(slots=True)
class View:
    """A task as the wire shows it, wherever it is kept."""

    task_id: str
    status: str
    waiting_for: str
    created_at: datetime
    updated_at: datetime
    #: When the wait ends (a resumed one too).
    deadline: datetime
    expires_at: datetime
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def wire(view: View) -> dict[str, Any]:
    """The ``DetailedTask`` of the spec."""
    task: dict[str, Any] = {
        "taskId": view.task_id,
        "status": view.status,
        "createdAt": _iso(view.created_at),
        "lastUpdatedAt": _iso(view.updated_at),
        "ttlMs": int((view.expires_at - view.created_at).total_seconds() * 1000),
        "pollIntervalMs": POLL_MS,
    }
    if view.status == "working":
        elapsed = max((datetime.now(UTC) - view.created_at).total_seconds(), 0)
        total = (view.deadline - view.created_at).total_seconds()
        task["statusMessage"] = f"{view.waiting_for} ({elapsed:.0f} s of {total:.0f})"
    elif view.status == "completed":
        task["result"] = view.result or {}
    elif view.status == "failed":
        task["error"] = view.error or {"code": INTERNAL_ERROR, "message": "failed"}
        task["statusMessage"] = str(task["error"].get("message", ""))
    return task


class Backend(Protocol):
    """Where tasks live and their waits run."""

    async def start(self, ctx: Context, name: str, arguments: dict[str, Any],
                    plan: tools.WaitPlan) -> View: ...  # fmt: skip

    async def get(self, ctx: Context, task_id: str) -> View: ...

    async def cancel(self, ctx: Context, task_id: str) -> View: ...


async def execute(caller: tools.Caller, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run the tool to its end, as an ordinary call would (without progress:
    a task reports its state on ``tasks/get``), as a ``CallToolResult``."""
    outcome = await tools.run(name, arguments, tools.ToolCall(caller))
    return outcome.wire()


def internal_error() -> dict[str, Any]:
    return {"code": INTERNAL_ERROR, "message": "the tool failed on the hub"}


def declared(ctx: Context) -> bool:
    """Whether this request's client takes a task for an answer."""
    if ctx.protocol_version not in VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    return bool(capabilities and capabilities.extensions and EXTENSION in capabilities.extensions)


def _require(ctx: Context) -> None:
    if not declared(ctx):
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message="Missing required client capability",
            data={"requiredCapabilities": {"extensions": {EXTENSION: {}}}},
        )


def _mcp_error(exc: RpcError) -> MCPError:
    if exc.code == ErrorCode.NOT_FOUND:
        return MCPError(code=INVALID_PARAMS, message=f"Failed to retrieve task: {exc.message}")
    return MCPError(code=int(exc.code), message=exc.message)


class TaskParams(types.RequestParams):
    task_id: str = Field(alias="taskId", max_length=200)


class UpdateParams(TaskParams):
    input_responses: dict[str, Any] = Field(alias="inputResponses", default_factory=dict)


class TasksExtension(Extension):
    identifier = EXTENSION

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def methods(self) -> Sequence[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskParams, self._get, VERSIONS),
            MethodBinding("tasks/update", UpdateParams, self._update, VERSIONS),
            MethodBinding("tasks/cancel", TaskParams, self._cancel, VERSIONS),
        ]

    async def intercept_tool_call(
        self, params: types.CallToolRequestParams, ctx: Context, call_next: CallNext
    ) -> HandlerResult:
        plan = tools.wait_plan(params.name, params.arguments) if declared(ctx) else None
        if plan is None:
            return await call_next(ctx)
        try:
            view = await self.backend.start(ctx, params.name, params.arguments or {}, plan)
        except RpcError:
            # Not a caller who may start one: the ordinary call refuses it.
            return await call_next(ctx)
        return {"resultType": "task", **wire(view)}

    async def _get(self, ctx: Context, params: TaskParams) -> HandlerResult:
        _require(ctx)
        try:
            return wire(await self.backend.get(ctx, params.task_id))
        except RpcError as exc:
            raise _mcp_error(exc) from None

    async def _update(self, ctx: Context, params: UpdateParams) -> HandlerResult:
        """Our tasks never ask for input: responses are for no outstanding
        request, and are ignored (the spec's SHOULD) once the task is found."""
        _require(ctx)
        try:
            await self.backend.get(ctx, params.task_id)
        except RpcError as exc:
            raise _mcp_error(exc) from None
        return {}

    async def _cancel(self, ctx: Context, params: TaskParams) -> HandlerResult:
        _require(ctx)
        try:
            await self.backend.cancel(ctx, params.task_id)
        except RpcError as exc:
            raise _mcp_error(exc) from None
        return {}


def _gated(binding: MethodBinding) -> RequestHandler:
    """The method at its revisions only (METHOD_NOT_FOUND elsewhere), as
    the SDK's MCPServer applies a binding."""
    versions = binding.protocol_versions or frozenset()

    async def gated(ctx: Context, params: Any) -> HandlerResult:
        if ctx.protocol_version not in versions:
            raise MCPError(code=METHOD_NOT_FOUND, message="Method not found", data=binding.method)
        return await binding.handler(ctx, params)

    return gated


def install(server: Server[Any], extension: TasksExtension, call_tool: RequestHandler) -> None:
    """Apply the extension to a lowlevel server: its methods, its
    ``tools/call`` interceptor around ``call_tool``, its capability."""
    for binding in extension.methods():
        server.add_request_handler(binding.method, binding.params_type, _gated(binding))
    wrapped = compose_tool_call_handler([extension], call_tool)
    server.add_request_handler("tools/call", types.CallToolRequestParams, wrapped)
    server.extensions[extension.identifier] = extension.settings()


# -- tasks of one process (the stdio server) -----------------------------------------------


@dataclass(slots=True)
class _Local:
    view: View
    runner: asyncio.Task[None] | None = field(default=None)


class LocalTasks:
    """The stdio server's tasks: in memory, its waits on this process's
    caller. One process serves one client of one agent."""

    def __init__(self, caller_for: Callable[[Context], tools.Caller]) -> None:
        self._caller_for = caller_for
        self._tasks: dict[str, _Local] = {}

    async def start(
        self, ctx: Context, name: str, arguments: dict[str, Any], plan: tools.WaitPlan
    ) -> View:
        caller = self._caller_for(ctx)
        self._forget_expired()
        now = datetime.now(UTC)
        deadline = now + timedelta(seconds=plan.seconds)
        expires = deadline + timedelta(seconds=KEEP_SECONDS)
        view = View(
            secrets.token_urlsafe(24), "working", plan.waiting_for, now, now, deadline, expires
        )
        task = self._tasks[view.task_id] = _Local(view)
        task.runner = asyncio.create_task(self._run(task, caller, name, arguments))
        return view

    async def _run(
        self, task: _Local, caller: tools.Caller, name: str, arguments: dict[str, Any]
    ) -> None:
        try:
            result = await execute(caller, name, arguments)
        except asyncio.CancelledError:
            self._end(task, "cancelled")
            raise
        except Exception:
            logger.exception("task %s (%s) failed", task.view.task_id, name)
            self._end(task, "failed", error=internal_error())
        else:
            self._end(task, "completed", result=result)

    @staticmethod
    def _end(task: _Local, status: str, **outcome: Any) -> None:
        if task.view.status != "working":
            return
        task.view.status = status
        task.view.updated_at = datetime.now(UTC)
        task.view.result = outcome.get("result")
        task.view.error = outcome.get("error")

    def _find(self, task_id: str) -> _Local:
        self._forget_expired()
        task = self._tasks.get(task_id)
        if task is None:
            raise not_found("task not found (or expired)")
        return task

    def _forget_expired(self) -> None:
        now = datetime.now(UTC)
        for task_id in [k for k, t in self._tasks.items() if t.view.expires_at <= now]:
            gone = self._tasks.pop(task_id)
            if gone.runner is not None:
                gone.runner.cancel()

    async def get(self, ctx: Context, task_id: str) -> View:
        return self._find(task_id).view

    async def cancel(self, ctx: Context, task_id: str) -> View:
        task = self._find(task_id)
        if task.view.status == "working" and task.runner is not None:
            self._end(task, "cancelled")
            task.runner.cancel()
            # The wait ends on the hub when its socket closes: wait for it.
            await asyncio.wait([task.runner])
        return task.view

    async def close(self) -> None:
        for task in self._tasks.values():
            if task.runner is not None:
                task.runner.cancel()
