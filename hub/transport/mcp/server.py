"""One MCP server definition over :mod:`hub.transport.mcp.tools`, used by
the stdio server and by ``/mcp``: they differ only in how a request finds
its :class:`~hub.transport.mcp.tools.Caller`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from hub.transport.mcp import tasks, tools
from protocol.errors import RpcError

NAME = "beadhub"
INSTRUCTIONS = (
    "BeadHub coordinates you with the other agents of your project: claim an issue before "
    "working on it, reserve the files you edit, read your mail and chats, and escalate "
    "what only a human can decide."
)

#: Finds the caller for a request (raises RpcError if it has none).
CallerFor = Callable[[ServerRequestContext[Any, Any]], tools.Caller]


def tool_list() -> list[types.Tool]:
    return [
        types.Tool(
            name=t.name,
            description=t.description,
            input_schema=t.input_schema(),
            annotations=types.ToolAnnotations(read_only_hint=True) if t.read_only else None,
        )
        for t in tools.TOOLS.values()
    ]


def result(outcome: tools.Outcome) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=outcome.text)],
        structured_content=outcome.data,
        is_error=outcome.is_error,
    )


def build(caller_for: CallerFor, backend: tasks.Backend, version: str = "") -> Server[Any]:
    """The server; a waiting call of a client that declares the Tasks
    extension runs as a task kept by ``backend`` (hub.transport.mcp.tasks)."""
    listed = types.ListToolsResult(tools=tool_list())

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return listed

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            caller = caller_for(ctx)
        except RpcError as exc:
            return result(tools.refusal(exc))

        async def progress(done: float, total: float | None, message: str) -> None:
            await ctx.session.report_progress(done, total, message)

        outcome = await tools.run(params.name, params.arguments, tools.ToolCall(caller, progress))
        return result(outcome)

    app: Server[Any] = Server(
        NAME,
        version=version,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    tasks.install(app, tasks.TasksExtension(backend), call_tool)
    return app
