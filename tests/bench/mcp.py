"""MCP tool calls, one after another, measured at the official SDK
client: over ``beadhub mcp`` (stdio, which sends them over the agent's
WebSocket session) and over ``/mcp`` (Streamable HTTP, stateless)."""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

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


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _measure(client: Any, to: str, count: int, watched: dict[str, int]) -> Metrics:
    """Latencies of ``status`` and ``mail_send``, and the CPU each watched
    process (by pid) spent per call: robust where wall times are not, on a
    machine other work keeps busy."""
    figures: Metrics = {}
    processes = {name: psutil.Process(pid) for name, pid in watched.items()}
    for tag, name, arguments in (
        ("status_", "status", {}),
        ("send_", "mail_send", {"to": [to], "body": "bench"}),
    ):
        before = {n: _cpu(p) for n, p in processes.items()}
        samples = await _timed(client, name, arguments, count)
        figures.update(percentiles(samples, tag))
        for n, p in processes.items():
            figures[f"{tag}{n}_cpu_us"] = (_cpu(p) - before[n]) / (count + WARMUP) * 1e6
    return figures


async def _websocket_reference(
    hub: dict[str, Any], agent: dict[str, Any], to: str, count: int
) -> Metrics:
    """The same calls straight over the agent's WebSocket (what the stdio
    server relays), mail with and without an idempotency key."""
    import uuid

    from protocol.client import HubClient

    figures: Metrics = {}
    async with HubClient(hub["ws"], agent["api_key"], events=["mail"]) as client:
        for tag, method, keyed in (
            ("ws_status_", "status.get", False),
            ("ws_send_", "mail.send", False),
            ("ws_send_keyed_", "mail.send", True),
        ):
            samples = []
            for i in range(WARMUP + count):
                params: dict[str, Any] = {} if method == "status.get" else {"to": [to], "body": "b"}
                if keyed:
                    params["idempotency_key"] = uuid.uuid4().hex
                t0 = time.perf_counter()
                await client.call(method, params)
                if i >= WARMUP:
                    samples.append(time.perf_counter() - t0)
            figures.update(percentiles(samples, tag))
    return figures


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
        me = psutil.Process()
        (server,) = [p for p in me.children() if p.cmdline()[-2:] == ["hub.cli", "mcp"]]
        watched = {"server": server.pid, "hub": hub["pid"], "client": me.pid}
        figures = await _measure(client, bob["alias"], spec["calls"], watched)
    reference = await _websocket_reference(hub, alice, bob["alias"], spec["calls"])
    return {**figures, **reference}


async def gen_http(spec: dict[str, Any]) -> Metrics:
    from mcp import Client

    from tests.mcp_support import http_transport

    hub = spec["hubs"][0]
    (team,) = await onboard_teams(hub["http"], 1, 2)
    alice, bob = team
    figures: Metrics = {}
    for mode, tag in (("auto", ""), ("legacy", "v2025_")):
        async with Client(http_transport(hub["http"], alice["api_key"]), mode=mode) as client:
            watched = {"hub": hub["pid"], "client": os.getpid()}
            measured = await _measure(client, bob["alias"], spec["calls"], watched)
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
    "one call at a time; the server sends each over the agent's WebSocket session (mail with "
    "an idempotency key). ws_*: the same methods straight over a WebSocket, for reference",
)
async def run_stdio(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        calls = CALLS_QUICK if ctx.quick else CALLS
        return await hubs.generate("tests.bench.mcp:gen_stdio", timeout=900, calls=calls)


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
        return await hubs.generate("tests.bench.mcp:gen_http", timeout=900, calls=calls)
