"""Sessions and presence: many idle sessions on one instance, and how fast
the team sees an agent come and go across two instances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from protocol.client import HubClient
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
    percentiles,
    scenario,
)

# -- idle sessions --------------------------------------------------------------------

IDLE_SESSIONS, IDLE_SESSIONS_QUICK = 10_000, 1_000
TEAM = 20


@scenario(
    "idle",
    "idle agent sessions held by one instance",
    [
        Target("sessions", IDLE_SESSIONS, higher_is_better=True, quick_limit=IDLE_SESSIONS_QUICK),
        Target("hub_rss_mb", 600),
        Target("presence_wrong", 0),
    ],
    note=f"teams of {TEAM} agents; half the sessions close at the end and must show offline",
)
async def run_idle(ctx: RunContext) -> Metrics:
    sessions = IDLE_SESSIONS_QUICK if ctx.quick else IDLE_SESSIONS
    async with cluster(ctx.quick) as hubs:
        return await hubs.generate(
            "tests.bench.sessions:gen_idle",
            timeout=900,
            sessions=sessions,
            team=TEAM,
            idle_seconds=3 if ctx.quick else 12,
        )


async def _presence_wrong(
    teams: Sequence[Sequence[tuple[dict[str, Any], HubClient]]],
    expect_online: set[str],
    deadline_s: float = 30.0,
) -> tuple[int, float]:
    """Ask each team (through one of its open sessions) who is online until
    every answer matches; returns the agents still wrong at the deadline
    and the time it took to agree."""
    start = time.monotonic()

    async def wrong_in(team: Sequence[tuple[dict[str, Any], HubClient]]) -> int:
        observer = next(c for a, c in team if a["agent_id"] in expect_online)
        listed = (await observer.call("presence.list"))["agents"]
        seen = {x["agent_id"]: x["online"] for x in listed}
        return sum(
            1 for a, _ in team if seen.get(a["agent_id"]) is not (a["agent_id"] in expect_online)
        )

    wrong = 0
    while time.monotonic() - start < deadline_s:
        wrong = sum(await asyncio.gather(*(wrong_in(team) for team in teams)))
        if wrong == 0:
            break
        await asyncio.sleep(0.1)
    return wrong, time.monotonic() - start


async def gen_idle(spec: dict[str, Any]) -> Metrics:
    hub = spec["hubs"][0]
    size = spec["team"]
    started = time.monotonic()
    teams = await onboard_teams(hub["http"], spec["sessions"] // size, size)
    onboard_s = time.monotonic() - started
    agents = [a for team in teams for a in team]
    m = meter(spec)
    rss_before = m.hub_rss_mb()

    m.start()
    clients = await connect_all(hub["ws"], agents)
    opening = m.stop()
    pairs = list(zip(agents, clients, strict=True))
    by_team = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    everyone = {a["agent_id"] for a in agents}
    wrong_online, online_s = await _presence_wrong(by_team, everyone)
    for client in clients:
        drain(client)

    m.start()
    await asyncio.sleep(spec["idle_seconds"])
    idle = m.stop()
    held = sum(1 for c in clients if c.connected)

    # Every other agent leaves; the ones who stay must see exactly that.
    leaving = [c for i, c in enumerate(clients) if i % 2]
    staying = {a["agent_id"] for i, a in enumerate(agents) if i % 2 == 0}
    await close_all(leaving)
    wrong_offline, offline_s = await _presence_wrong(by_team, staying)
    await close_all(clients)
    return {
        "sessions": float(held),
        "hub_rss_mb": idle["hub_rss_mb"],
        "presence_wrong": float(wrong_online + wrong_offline),
        "kb_per_session": (idle["hub_rss_mb"] - rss_before) * 1024 / max(1, len(clients)),
        "open_rate": len(clients) / opening["wall_s"],
        "open_hub_cpu_pct": opening["hub_cpu_pct"],
        "open_pg_cpu_pct": opening["pg_cpu_pct"],
        "open_gen_cpu_pct": opening["gen_cpu_pct"],
        "online_agree_s": online_s,
        "offline_agree_s": offline_s,
        "idle_hub_cpu_pct": idle["hub_cpu_pct"],
        "idle_pg_cpu_pct": idle["pg_cpu_pct"],
        "onboard_s": onboard_s,
        "others_cpu_pct": opening["others_cpu_pct"],
        "load1": idle["load1"],
    }


# -- offline detection and presence across instances ---------------------------------------

TRIALS, TRIALS_QUICK = 40, 8


@scenario(
    "offline",
    "offline detection after a socket closes (two instances, Redis)",
    [Target("offline_max_ms", 2000), Target("offline_p99_ms", 2000)],
    note="half the sockets close cleanly, half are reset (as when the agent's process dies); "
    "an observer on each instance times the offline event; online_* is the same for arrival",
)
async def run_offline(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick, instances=2, redis=True) as hubs:
        return await hubs.generate(
            "tests.bench.sessions:gen_offline",
            timeout=300,
            trials=TRIALS_QUICK if ctx.quick else TRIALS,
        )


async def _arrival(client: HubClient, alias: str, online: bool, timeout: float = 10.0) -> float:
    """When (perf_counter) ``client`` learns that ``alias`` went on/offline."""
    await client.next_event(
        "presence",
        where=lambda e: e["data"]["alias"] == alias and e["data"]["online"] is online,
        timeout=timeout,
    )
    return time.perf_counter()


async def gen_offline(spec: dict[str, Any]) -> Metrics:
    hubs = spec["hubs"]
    trials = spec["trials"]
    (team,) = await onboard_teams(hubs[0]["http"], 1, len(hubs) + trials)
    observers = [
        await HubClient(h["ws"], a["api_key"], reconnect=False).connect()
        for h, a in zip(hubs, team, strict=False)
    ]
    subjects = team[len(hubs) :]
    online: list[float] = []
    offline: list[float] = []
    m = meter(spec).start()
    try:
        for k, subject in enumerate(subjects):
            home = hubs[k % len(hubs)]
            for observer in observers:
                drain(observer)
            alias = subject["alias"]
            waiting = [asyncio.create_task(_arrival(o, alias, True)) for o in observers]
            t0 = time.perf_counter()
            client = await HubClient(home["ws"], subject["api_key"], reconnect=False).connect()
            online += [t - t0 for t in await asyncio.gather(*waiting)]

            waiting = [asyncio.create_task(_arrival(o, alias, False)) for o in observers]
            await asyncio.sleep(0)
            t0 = time.perf_counter()
            if k % 2 and client._ws is not None:
                client._closed = True
                client._ws.transport.abort()  # a reset, as from a dead process
            else:
                await client.close()
            offline += [t - t0 for t in await asyncio.gather(*waiting)]
            await client.close()
    finally:
        usage = m.stop()
        await close_all(observers)
    return {
        **percentiles(offline, "offline_"),
        **percentiles(online, "online_"),
        "hub_cpu_pct": usage["hub_cpu_pct"],
        "others_cpu_pct": usage["others_cpu_pct"],
        "load1": usage["load1"],
    }


# -- the floor: the cheapest call ----------------------------------------------------------


@scenario(
    "ping",
    "context: `session.ping` (no database) round trips, 1 and 64 sessions",
    [],
    note="what the WebSocket and JSON-RPC layers alone cost per call: the floor under "
    "every other figure",
)
async def run_ping(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        return await hubs.generate("tests.bench.sessions:gen_ping", seconds=2 if ctx.quick else 5)


async def gen_ping(spec: dict[str, Any]) -> Metrics:
    from tests.bench.load import closed_loop

    hub = spec["hubs"][0]
    teams = await onboard_teams(hub["http"], 8, 8)
    agents = [a for team in teams for a in team]
    clients = await connect_all(hub["ws"], agents)

    def pinger(client: HubClient) -> Any:
        async def op(i: int) -> None:
            await client.call("session.ping")

        return op

    try:
        one = await closed_loop([pinger(clients[0])], spec["seconds"], meter=meter(spec))
        many = await closed_loop([pinger(c) for c in clients], spec["seconds"], meter=meter(spec))
    finally:
        await close_all(clients)
    return {**one.metrics(), **many.metrics("c64_")}
