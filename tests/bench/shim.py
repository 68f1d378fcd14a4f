"""The HTTP shim, bdh's path: mail send and status from 64 concurrent
clients, and throughput as concurrency rises from 1 to 256 clients."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import urllib.parse
from typing import Any

import httpx
import orjson

from tests.bench.harness import (
    Metrics,
    RunContext,
    Target,
    cluster,
    meter,
    onboard_teams,
    scenario,
)
from tests.bench.load import closed_loop

CLIENTS = 64
TEAM = 8
LEVELS, LEVELS_QUICK = (1, 16, 64, 256), (1, 16, 64)
#: "Never falls", allowing for run-to-run noise on a shared 2-core machine.
SCALING_TOLERANCE = 0.95
#: "raw" (KeepAlive below) or "httpx".
CLIENT = os.environ.get("BEADHUB_BENCH_HTTP", "raw")


class KeepAlive:
    """A minimal HTTP/1.1 client: one keep-alive connection, one request at
    a time, as bdh uses it. httpx spends about 1 ms of CPU per request on
    this machine, so 64 httpx clients cannot offer 2,000 requests/s on 2
    cores without the generator becoming what is measured; this spends a
    small fraction of that. ``BEADHUB_BENCH_HTTP=httpx`` uses httpx instead."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        url = urllib.parse.urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.head = f"Host: {self.host}:{self.port}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\n{self.head}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            data = await self._chunks()
        else:
            data = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection") == b"close":
            await self.aclose()
        return status, data

    async def _chunks(self) -> bytes:
        assert self.reader is not None
        parts = []
        while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append((await self.reader.readexactly(size + 2))[:-2])
        await self.reader.readuntil(b"\r\n")
        return b"".join(parts)

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class Agent:
    """One bdh-like client: its own keep-alive connection and key."""

    def __init__(self, base_url: str, me: dict[str, Any], peer: dict[str, Any]) -> None:
        self.me = me
        self.peer_alias = peer["alias"]
        headers = {"Authorization": f"Bearer {me['api_key']}"}
        self.raw = KeepAlive(base_url, headers) if CLIENT == "raw" else None
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=30,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self.errors = 0

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        if self.raw is not None:
            payload = orjson.dumps(body) if body is not None else None
            status, data = await self.raw.request(method, path, payload)
            ok = status == 200 and data.startswith(b"{")
        else:
            response = await self.http.request(method, path, json=body)
            ok = response.status_code == 200
        self.errors += not ok

    async def send_mail(self, i: int) -> None:
        body = {"to_alias": self.peer_alias, "subject": "bench", "body": f"message {i}"}
        await self._call("POST", "/v1/messages", body)

    async def status(self, i: int) -> None:
        await self._call("GET", f"/v1/status?workspace_id={self.me['agent_id']}")

    async def mixed(self, i: int) -> None:
        await (self.send_mail(i) if i % 2 else self.status(i))

    async def aclose(self) -> None:
        if self.raw is not None:
            await self.raw.aclose()
        await self.http.aclose()


async def _agents(spec: dict[str, Any], count: int) -> list[Agent]:
    hub = spec["hubs"][0]
    teams = await onboard_teams(hub["http"], count // TEAM, TEAM)
    return [
        Agent(hub["http"], team[k], team[(k + 1) % TEAM]) for team in teams for k in range(TEAM)
    ]


@scenario(
    "http",
    f"same calls through the HTTP shim (bdh's path), {CLIENTS} concurrent clients",
    [
        Target("mail_rate", 2000, higher_is_better=True),
        Target("status_rate", 2000, higher_is_better=True),
        Target("errors", 0),
    ],
    needs=["http:POST /v1/messages", "http:GET /v1/status"],
    note=f"POST /v1/messages and GET /v1/status each measured on their own, {CLIENTS} "
    f"keep-alive clients ({CLIENT}) in teams of {TEAM}",
)
async def run_http(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        return await hubs.generate(
            "tests.bench.shim:gen_http", seconds=3 if ctx.quick else 8, clients=CLIENTS
        )


async def gen_http(spec: dict[str, Any]) -> Metrics:
    agents = await _agents(spec, spec["clients"])
    try:
        mail = await closed_loop([a.send_mail for a in agents], spec["seconds"], meter=meter(spec))
        status = await closed_loop([a.status for a in agents], spec["seconds"], meter=meter(spec))
    finally:
        for agent in agents:
            await agent.aclose()
    return {
        **mail.metrics("mail_"),
        **status.metrics("status_"),
        "errors": float(sum(a.errors for a in agents)),
    }


@scenario(
    "http-scaling",
    "HTTP shim under rising concurrency (1, 16, 64, 256 clients)",
    [Target("min_step", SCALING_TOLERANCE, higher_is_better=True), Target("errors", 0)],
    needs=["http:POST /v1/messages", "http:GET /v1/status"],
    note="each client alternates mail send and status; min_step is the smallest ratio of "
    "one level's throughput to the previous level's (1.0 = flat; the target allows 5% noise)",
)
async def run_http_scaling(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        return await hubs.generate(
            "tests.bench.shim:gen_http_scaling",
            timeout=600,
            seconds=2 if ctx.quick else 6,
            levels=list(LEVELS_QUICK if ctx.quick else LEVELS),
        )


async def gen_http_scaling(spec: dict[str, Any]) -> Metrics:
    levels = spec["levels"]
    agents = await _agents(spec, max(levels))
    figures: Metrics = {}
    rates = []
    try:
        for level in levels:
            result = await closed_loop(
                [a.mixed for a in agents[:level]], spec["seconds"], meter=meter(spec)
            )
            rates.append(result.rate)
            figures[f"c{level}_rps"] = result.rate
            figures[f"c{level}_p99_ms"] = result.metrics()["p99_ms"]
            figures[f"c{level}_hub_cpu_pct"] = result.usage["hub_cpu_pct"]
            figures[f"c{level}_gen_cpu_pct"] = result.usage["gen_cpu_pct"]
    finally:
        for agent in agents:
            await agent.aclose()
    steps = [b / a for a, b in itertools.pairwise(rates) if a]
    return {
        "min_step": min(steps) if steps else float("nan"),
        **figures,
        "errors": float(sum(a.errors for a in agents)),
    }
