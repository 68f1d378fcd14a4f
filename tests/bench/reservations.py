"""File reservations over WebSocket: 64 agents acquiring and releasing
their own paths at once.

Every reservation event goes to every session of the project that wants it.
The target row's agents subscribe to what is addressed to them (mail, chat,
escalations: ``protocol.topics``), as busy agents that do not watch others'
locks would; ``reservations-all-events`` keeps the default subscription, in
which each pair also pushes 2 events to each of the team's 8 sessions, all
read by this one generator process."""

from __future__ import annotations

from typing import Any

from tests.bench.harness import (
    Metrics,
    RunContext,
    Target,
    close_all,
    cluster,
    connect_all,
    drain,
    meter,
    onboard_teams,
    scenario,
)
from tests.bench.load import closed_loop

AGENTS = 64
TEAM = 8
#: What the target row's agents receive: what is sent to them.
ADDRESSED = ["mail", "chat", "escalation"]


@scenario(
    "reservations",
    f"reservation acquire + release on distinct paths, {AGENTS} agents",
    [Target("rate", 3000, higher_is_better=True), Target("refused", 0)],
    needs=["rpc:reservations.acquire", "rpc:reservations.release"],
    note=f"teams of {TEAM}; each agent reserves a file of its own, releases it, and again "
    "(rate counts acquire+release pairs; refused counts conflicts, which must not happen); "
    f"sessions subscribed to {', '.join(ADDRESSED)}",
)
async def run_reservations(ctx: RunContext) -> Metrics:
    return await _run(ctx, ADDRESSED)


@scenario(
    "reservations-all-events",
    "context: reservations as above, every session receiving every event (the default)",
    [],
    needs=["rpc:reservations.acquire", "rpc:reservations.release"],
    note=f"as `reservations`, but each pair's 2 events also go to all {TEAM} sessions of the team",
)
async def run_reservations_all_events(ctx: RunContext) -> Metrics:
    return await _run(ctx, None)


async def _run(ctx: RunContext, subscription: list[str] | None) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        return await hubs.generate(
            "tests.bench.reservations:gen_reservations",
            seconds=3 if ctx.quick else 10,
            agents=AGENTS,
            events=subscription,
        )


async def gen_reservations(spec: dict[str, Any]) -> Metrics:
    hub = spec["hubs"][0]
    teams = await onboard_teams(hub["http"], spec["agents"] // TEAM, TEAM)
    agents = [a for team in teams for a in team]
    clients = await connect_all(hub["ws"], agents, events=spec["events"])
    refused = 0

    def worker(k: int) -> Any:
        client = clients[k]
        alias = agents[k]["alias"]

        async def op(i: int) -> None:
            nonlocal refused
            path = f"src/{alias}/module_{i % 16}.py"
            acquired = await client.call("reservations.acquire", paths=[path], reason="bench")
            if acquired.get("conflicts"):
                refused += 1
            await client.call("reservations.release", paths=[path])
            if i % 200 == 0:
                drain(client)

        return op

    try:
        result = await closed_loop(
            [worker(k) for k in range(len(clients))], spec["seconds"], meter=meter(spec)
        )
    finally:
        await close_all(clients)
    return {**result.metrics(), "refused": float(refused)}
