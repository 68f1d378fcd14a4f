"""Driving the hub's MCP endpoints with the official ``mcp`` SDK's client:
``beadhub mcp`` as a stdio subprocess, ``/mcp`` over Streamable HTTP."""

from __future__ import annotations

import contextlib
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
