"""Driving the hub's MCP endpoints with the official ``mcp`` SDK's client:
``beadhub mcp`` as a stdio subprocess, ``/mcp`` over Streamable HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import psutil
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

TRANSPORTS = ("stdio", "http")


def stdio_params(
    http_url: str,
    api_key: str | None,
    *,
    cwd: Path | str = "/tmp",
    env: dict[str, str] | None = None,
) -> StdioServerParameters:
    """``beadhub mcp`` as Claude Code starts it: a command in a directory."""
    full = {"BEADHUB_URL": http_url, **(env or {})}
    if api_key is not None:
        full["BEADHUB_API_KEY"] = api_key
    return StdioServerParameters(
        command=sys.executable, args=["-m", "hub.cli", "mcp"], env=full, cwd=str(cwd)
    )


def http_transport(url: str, api_key: str | None, **client: Any) -> Any:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=700), **client)
    return streamable_http_client(url.rstrip("/") + "/mcp", http_client=http)


@contextlib.asynccontextmanager
async def mcp_client(
    transport: str, http_url: str, api_key: str, *, mode: str = "auto", **kw: Any
) -> AsyncIterator[Client]:
    server = (
        stdio_params(http_url, api_key, **kw)
        if transport == "stdio"
        else http_transport(http_url, api_key, **kw)
    )
    async with Client(server, mode=mode, read_timeout_seconds=60) as client:
        yield client


async def call(client: Client, name: str, **arguments: Any) -> dict[str, Any]:
    """A tool's JSON answer; fails the test on a tool error."""
    result = await client.call_tool(name, arguments)
    assert not result.is_error, f"{name} failed: {text(result)}"
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def refused(client: Client, name: str, **arguments: Any) -> tuple[dict[str, Any], str]:
    """A tool error's ``error`` object and its one-line text."""
    result = await client.call_tool(name, arguments)
    assert result.is_error, f"{name} should have been refused: {text(result)}"
    assert isinstance(result.structured_content, dict)
    return result.structured_content["error"], text(result)


def text(result: CallToolResult) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def mcp_processes() -> list[psutil.Process]:
    """The ``beadhub mcp`` processes this test process started."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.cmdline()[-2:] == ["hub.cli", "mcp"]:
                found.append(child)
    return found


#: The revision whose requests carry their own envelope, and its Tasks extension.
MODERN = "2026-07-28"
TASKS_EXTENSION = "io.modelcontextprotocol/tasks"


class ModernHttp:
    """Plain 2026-07-28 JSON-RPC requests to ``/mcp`` (envelope in ``_meta``,
    routing headers), declaring the Tasks extension or not: what a
    requester sends, spelled out so a test can send exactly that."""

    def __init__(self, http_url: str, api_key: str, *, tasks: bool = True) -> None:
        self.url = http_url.rstrip("/") + "/mcp"
        self.api_key = api_key
        self.tasks = tasks
        self._ids = 0

    async def request(self, method: str, **params: Any) -> dict[str, Any]:
        """The response object: ``result`` or ``error``."""
        self._ids += 1
        capabilities = {"extensions": {TASKS_EXTENSION: {}}} if self.tasks else {}
        meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "0"},
        }
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": method,
            "Accept": "application/json, text/event-stream",
        }
        if method == "tools/call":
            headers["Mcp-Name"] = params["name"]
        elif method.startswith("tasks/") and "taskId" in params:
            headers["Mcp-Name"] = params["taskId"]
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method,
                "params": {**params, "_meta": meta}}  # fmt: skip
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=700)) as http:
            response = await http.post(self.url, json=body, headers=headers)
        return last_message(response.headers.get("content-type", ""), response.text)

    async def result(self, method: str, **params: Any) -> dict[str, Any]:
        answer = await self.request(method, **params)
        assert "result" in answer, f"{method} failed: {answer}"
        result: dict[str, Any] = answer["result"]
        return result


def last_message(content_type: str, text: str) -> dict[str, Any]:
    """The JSON-RPC answer of a JSON or an SSE response."""
    if content_type.startswith("text/event-stream"):
        data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        messages = [json.loads(d) for d in data if d]
        answers = [m for m in messages if "id" in m]
        assert answers, f"no answer in the stream: {text[:500]}"
        return dict(answers[-1])
    return dict(json.loads(text))


class ModernStdio:
    """``beadhub mcp`` spoken to in 2026-07-28 requests, one JSON line each
    (no initialize: every request carries its envelope)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._ids = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, http_url: str, api_key: str) -> AsyncIterator[ModernStdio]:
        params = stdio_params(http_url, api_key)
        proc = await asyncio.create_subprocess_exec(
            params.command,
            *params.args,
            env={**os.environ, **(params.env or {})},
            cwd=params.cwd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            yield cls(proc)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def result(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._ids += 1
        meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS_EXTENSION: {}}},
            "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "0"},
        }
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method,
                "params": {**params, "_meta": meta}}  # fmt: skip
        self.proc.stdin.write(json.dumps(body).encode() + b"\n")
        await self.proc.stdin.drain()
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
            assert line, "beadhub mcp closed its output"
            message = json.loads(line)
            if message.get("id") == self._ids:
                assert "result" in message, f"{method} failed: {message}"
                return dict(message["result"])
