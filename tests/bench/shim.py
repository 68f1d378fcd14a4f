"""The HTTP shim, bdh's path: mail send and status from 64 concurrent
clients, and throughput as concurrency rises from 1 to 256 clients."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

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


class Agent:
    """One bdh-like client: its own keep-alive connection and key."""

    def __init__(self, base_url: str, me: dict[str, Any], peer: dict[str, Any]) -> None:
        self.me = me
        self.peer_alias = peer["alias"]
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {me['api_key']}"},
            timeout=30,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self.errors = 0

    async def send_mail(self, i: int) -> None:
        body = {"to_alias": self.peer_alias, "subject": "bench", "body": f"message {i}"}
        response = await self.http.post("/v1/messages", json=body)
        self.errors += response.status_code != 200

    async def status(self, i: int) -> None:
        response = await self.http.get("/v1/status", params={"workspace_id": self.me["agent_id"]})
        self.errors += response.status_code != 200

    async def mixed(self, i: int) -> None:
        await (self.send_mail(i) if i % 2 else self.status(i))

    async def aclose(self) -> None:
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
    note=f"POST /v1/messages and GET /v1/status each measured on their own, {CLIENTS} httpx "
    f"clients with keep-alive in teams of {TEAM}",
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
