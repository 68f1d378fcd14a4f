"""Waiting in line: how long after a holder releases a path the agent
queued for it (on the other instance) holds it.

The holder's session is on instance 1, the waiter's on instance 2, both on
Redis. Each round: the holder reserves the path, the waiter asks for it
with ``wait`` and is queued (the holder sees ``reservation.queued``), then
the holder releases. The figure is the time from sending the release to
the waiter's grant arriving: the release's own commit, its event crossing
Redis, the waiter's wake-up, its attempt in PostgreSQL and the answer. An
upper bound of the hand-off, since the release's round trip is in it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from protocol.client import HubClient
from tests.bench.harness import (
    Metrics,
    RunContext,
    Target,
    close_all,
    cluster,
    drain,
    onboard_teams,
    percentiles,
    scenario,
)

ROUNDS, ROUNDS_QUICK = 1000, 100
PATH = "src/contended.py"


@scenario(
    "queue-handoff",
    "queued acquire: from the holder's release to the waiter's grant, across two instances",
    [Target("p99_ms", 10)],
    needs=["rpc:reservations.acquire"],
    note="holder on instance 1, waiter on instance 2 (Redis); release sent -> grant received",
)
async def run_handoff(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick, instances=2, redis=True) as hubs:
        return await hubs.generate(
            "tests.bench.queues:gen_handoff", rounds=ROUNDS_QUICK if ctx.quick else ROUNDS
        )


async def _acquire_timed(waiter: HubClient) -> tuple[dict[str, Any], float]:
    """The queued acquire's answer and when it was read, whether or not the
    release's own answer came first. (A done callback on the task ran too
    late when the grant came before the release's answer: the task was
    already done when awaited, its callback not yet run.)"""
    granted: dict[str, Any] = await waiter.call("reservations.acquire", paths=[PATH], wait=30)
    return granted, time.perf_counter()


async def gen_handoff(spec: dict[str, Any]) -> Metrics:
    hubs = spec["hubs"]
    (team,) = await onboard_teams(hubs[0]["http"], 1, 2)
    holder = await HubClient(hubs[0]["ws"], team[0]["api_key"], reconnect=False).connect()
    waiter = await HubClient(hubs[-1]["ws"], team[1]["api_key"], reconnect=False).connect()
    samples: list[float] = []
    try:
        for n in range(spec["rounds"] + 20):
            await holder.call("reservations.acquire", paths=[PATH])
            drain(holder)
            wanted = asyncio.create_task(_acquire_timed(waiter))
            await holder.next_event("reservation.queued", timeout=10)
            started = time.perf_counter()
            await holder.call("reservations.release", paths=[PATH])
            granted, arrived = await wanted
            elapsed = arrived - started
            assert granted["status"] == "granted", granted
            if n >= 20:  # the first rounds warm the connections and plans up
                samples.append(elapsed)
            await waiter.call("reservations.release", paths=[PATH])
            drain(waiter)
    finally:
        await close_all([holder, waiter])
    return percentiles(samples)
