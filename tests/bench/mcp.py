"""MCP tool calls, one after another, measured at the official SDK
client: over ``beadhub mcp`` (stdio, which sends them over the agent's
WebSocket session) and over ``/mcp`` (Streamable HTTP, stateless)."""

from __future__ import annotations

import time
from typing import Any

from tests.bench.harness import (
    Metrics,
    RunContext,
    Target,
    cluster,
    onboard_teams,
    percentiles,
    scenario,
)

CALLS, CALLS_QUICK = 1000, 100
WARMUP = 20


async def _timed(client: Any, name: str, arguments: dict[str, Any], count: int) -> list[float]:
    for _ in range(WARMUP):
        await client.call_tool(name, arguments)
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        result = await client.call_tool(name, arguments)
        samples.append(time.perf_counter() - t0)
        assert not result.is_error, result.content
    return samples


async def _measure(client: Any, to: str, count: int) -> Metrics:
    status = await _timed(client, "status", {}, count)
    send = await _timed(client, "mail_send", {"to": [to], "body": "bench"}, count)
    return {**percentiles(status, "status_"), **percentiles(send, "send_")}


async def gen_stdio(spec: dict[str, Any]) -> Metrics:
    import sys

    from mcp import Client, StdioServerParameters

    hub = spec["hubs"][0]
    (team,) = await onboard_teams(hub["http"], 1, 2)
    alice, bob = team
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "hub.cli", "mcp"],
        env={"BEADHUB_URL": hub["http"], "BEADHUB_API_KEY": alice["api_key"]},
    )
    async with Client(params) as client:
        return await _measure(client, bob["alias"], spec["calls"])


async def gen_http(spec: dict[str, Any]) -> Metrics:
    from mcp import Client

    from tests.mcp_support import http_transport

    hub = spec["hubs"][0]
    (team,) = await onboard_teams(hub["http"], 1, 2)
    alice, bob = team
    figures: Metrics = {}
    for mode, tag in (("auto", ""), ("legacy", "v2025_")):
        async with Client(http_transport(hub["http"], alice["api_key"]), mode=mode) as client:
            measured = await _measure(client, bob["alias"], spec["calls"])
        figures.update({tag + k: v for k, v in measured.items()})
    return figures


@scenario(
    "mcp_stdio",
    "MCP tool call round trip over the stdio server (status, mail send)",
    [
        Target("status_p50_ms", 2),
        Target("status_p99_ms", 10),
        Target("send_p50_ms", 2),
        Target("send_p99_ms", 10),
    ],
    needs=["rpc:mail.send"],
    note="the official SDK client starts `beadhub mcp` and calls `status`, then `mail_send`, "
    "one call at a time; the server sends each over the agent's WebSocket session",
)
async def run_stdio(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        calls = CALLS_QUICK if ctx.quick else CALLS
        return await hubs.generate("tests.bench.mcp:gen_stdio", calls=calls)


@scenario(
    "mcp_http",
    "MCP tool call round trip over /mcp (Streamable HTTP, stateless)",
    [Target("status_p50_ms", 5), Target("send_p50_ms", 5)],
    needs=["rpc:mail.send"],
    note="the official SDK client on /mcp, first with the 2026-07-28 revision (figures "
    "without prefix), then with the 2025-11-25 handshake (v2025_); one call at a time",
)
async def run_http(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        calls = CALLS_QUICK if ctx.quick else CALLS
        return await hubs.generate("tests.bench.mcp:gen_http", calls=calls)
