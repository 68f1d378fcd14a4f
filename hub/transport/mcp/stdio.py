"""``beadhub mcp``: the stdio MCP server a coding agent's client starts for
its session.

It holds the agent's WebSocket session (:class:`protocol.client.HubClient`)
for as long as it runs, so the agent is online exactly while its Claude
Code / Codex session lives: the hub sees the socket close when the process
ends, killed or not. HubClient reconnects after a hub restart or failover
and resumes by cursor. The tools' methods go over that session; a call
that the connection cut off is sent again once it is back if that is
safe: a read, or a write with an idempotency key (every write that takes
one gets one, so the repeat is applied once). Any other write is reported
as "may or may not have happened".

A wait runs on a connection of its own, closed when the MCP client
cancels the call: the hub then ends the wait (and its "waiting" state) at
once. If that connection drops, the tools wait again from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import uuid
from typing import Any

from mcp.server.stdio import stdio_server

from hub.transport.mcp import server, tasks, tools
from hub.transport.mcp.config import Found
from protocol.client import ConnectionLost, HubClient
from protocol.errors import ErrorCode, RpcError
from protocol.methods import CATALOGUE

logger = logging.getLogger("beadhub.mcp")

#: Methods safe to send again when the connection dropped mid-call.
READS = frozenset(
    {
        "session.whoami",
        "status.get",
        "policy.get",
        "beads.ready",
        "reservations.list",
        "mail.inbox",
        "mail.receipts",
        "chat.pending",
        "chat.sessions",
        "escalations.get",
    }
)
#: Writes that take an idempotency key (protocol.schema.Retryable): sent
#: again after a reconnect, they are applied once.
RETRYABLE = frozenset(
    name for name, model in CATALOGUE.items() if "idempotency_key" in model.model_fields
)
#: How long a call waits for the session to come back.
RECONNECT_SECONDS = 15.0


class SessionCaller:
    """The tools' methods over the agent's persistent session."""

    def __init__(self, found: Found) -> None:
        self.found = found
        # Only mail events: they mark the message "pushed" on the hub; the
        # session is here for presence, not for the event stream.
        self.client = HubClient(found.url, found.api_key, events=["mail"], max_backoff=1.0)
        self._drain: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self.client.connect()
        self._drain = asyncio.create_task(self._discard_events())

    async def close(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
        await self.client.close()

    async def _discard_events(self) -> None:
        async for _event in self.client.events():
            pass

    async def _connected(self) -> None:
        if not self.client.connected:
            try:
                await self.client.wait_connected(RECONNECT_SECONDS)
            except TimeoutError:
                raise tools.Retry() from None

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        retryable = method in RETRYABLE
        if retryable:
            # The same key on the repeat: the hub applies the write once.
            params = {**params, "idempotency_key": uuid.uuid4().hex}
        await self._connected()
        try:
            return await self.client.call(method, params)
        except ConnectionLost:
            if method not in READS and not retryable:
                raise tools.Retry() from None
        await self._connected()
        try:
            return await self.client.call(method, params)
        except ConnectionLost:
            raise tools.Retry() from None

    async def wait(self, method: str, params: dict[str, Any]) -> Any:
        waiter = HubClient(self.found.url, self.found.api_key, events=["mail"], reconnect=False)
        try:
            await waiter.connect()
        except (OSError, TimeoutError, RpcError) as exc:
            if isinstance(exc, RpcError) and exc.code != ErrorCode.UNAVAILABLE:
                raise
            raise tools.Retry() from None
        try:
            return await waiter.call(method, params)
        except ConnectionLost:
            raise tools.Retry() from None
        finally:
            # On cancellation too: the hub ends the wait with the socket.
            with contextlib.suppress(Exception):
                await waiter.close()


class _PipeIn:
    """stdin as the SDK's stdio transport reads it (``async for line``),
    from the event loop: the SDK's own reader hands every line to a worker
    thread, and every answer's write and flush too, which cost more than
    the rest of a tool call's relaying."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _PipeIn:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class _PipeOut:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode())

    async def flush(self) -> None:
        await self._writer.drain()


async def _pipes() -> tuple[_PipeIn, _PipeOut] | None:
    """stdin and stdout on the event loop, when they are pipes or sockets
    (as MCP clients start servers); None otherwise."""
    loop = asyncio.get_running_loop()
    try:
        reader = asyncio.StreamReader(limit=2**26)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", closefd=False)
        )
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(1, "wb", closefd=False)
        )
    except (OSError, ValueError):
        return None
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return _PipeIn(reader), _PipeOut(writer)


async def serve(found: Found) -> None:
    caller = SessionCaller(found)
    await caller.connect()
    backend = tasks.LocalTasks(lambda _ctx: caller)
    try:
        app = server.build(lambda _ctx: caller, backend)
        pipes = await _pipes()
        streams = stdio_server(*pipes) if pipes else stdio_server()  # type: ignore[arg-type]
        async with streams as (read, write):
            await app.run(read, write, app.create_initialization_options())
    finally:
        await backend.close()
        await caller.close()


def main(found: Found) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(found))
