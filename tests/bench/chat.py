"""Chat: how long a message takes to reach the other agent's session (one
instance, and across two instances through Redis), how long ``send`` with
``wait`` takes to return B's reply, and what 50 waiting senders cost while
nothing flows."""

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
    meter,
    onboard_teams,
    percentiles,
    scenario,
)

MESSAGES, MESSAGES_QUICK = 2000, 200
#: Pairs chatting at once in the "busy" variant reported next to the target.
BUSY_PAIRS = 16


async def _pairs(spec: dict[str, Any], pairs: int) -> list[tuple[HubClient, HubClient, str]]:
    """``pairs`` (A, B, conversation id), A on the first hub and B on the
    last (the same one when there is one)."""
    hubs = spec["hubs"]
    (team,) = await onboard_teams(hubs[0]["http"], 1, 2 * pairs)
    out = []
    for i in range(pairs):
        a_agent, b_agent = team[2 * i], team[2 * i + 1]
        a = await HubClient(hubs[0]["ws"], a_agent["api_key"], reconnect=False).connect()
        b = await HubClient(hubs[-1]["ws"], b_agent["api_key"], reconnect=False).connect()
        opened = await a.call("chat.send", to=[b_agent["alias"]], body="hello")
        await b.next_event("chat.message", timeout=10)
        out.append((a, b, opened["session_id"]))
    for a, b, _ in out:
        drain(a)
        drain(b)
    return out


async def _push_latencies(
    a: HubClient, b: HubClient, session_id: str, count: int, tag: str
) -> tuple[list[float], list[float]]:
    """A sends ``count`` messages one after another; for each, the time
    until B's session has the push, and until A has its answer."""
    push: list[float] = []
    ack: list[float] = []
    for i in range(count):
        body = f"{tag}-{i}"
        t0 = time.perf_counter()
        call = asyncio.ensure_future(a.call("chat.send", session_id=session_id, body=body))
        await b.next_event("chat.message", where=lambda e, b_=body: e["data"]["body"] == b_)
        push.append(time.perf_counter() - t0)
        await call
        ack.append(time.perf_counter() - t0)
    return push, ack


async def gen_push(spec: dict[str, Any]) -> Metrics:
    count = spec["messages"]
    (pair,) = await _pairs(spec, 1)
    a, b, sid = pair
    await _push_latencies(a, b, sid, 50, "warm")
    m = meter(spec).start()
    push, ack = await _push_latencies(a, b, sid, count, "m")
    usage = m.stop()
    await close_all([a, b])

    # The same with BUSY_PAIRS conversations at once, for context.
    busy = await _pairs(spec, BUSY_PAIRS)
    busy_runs = await asyncio.gather(
        *(_push_latencies(x, y, s, max(50, count // BUSY_PAIRS), "busy") for x, y, s in busy)
    )
    await close_all([c for x, y, _ in busy for c in (x, y)])
    busy_push = [t for p, _ in busy_runs for t in p]
    return {
        **percentiles(push),
        "ack_p50_ms": percentiles(ack)["p50_ms"],
        "ack_p99_ms": percentiles(ack)["p99_ms"],
        "rate": len(push) / usage["wall_s"],
        "hub_cpu_pct": usage["hub_cpu_pct"],
        "pg_cpu_pct": usage["pg_cpu_pct"],
        "gen_cpu_pct": usage["gen_cpu_pct"],
        f"busy{BUSY_PAIRS}_p50_ms": percentiles(busy_push)["p50_ms"],
        f"busy{BUSY_PAIRS}_p99_ms": percentiles(busy_push)["p99_ms"],
        "others_cpu_pct": usage["others_cpu_pct"],
        "load1": usage["load1"],
    }


@scenario(
    "chat",
    "chat: agent A sends, agent B's session receives the push (one instance)",
    [Target("p50_ms", 1), Target("p99_ms", 5)],
    needs=["rpc:chat.send"],
    note="one conversation, one message at a time, A's call to B's push; "
    f"busy{BUSY_PAIRS}_* is {BUSY_PAIRS} conversations at once",
)
async def run_chat(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        return await hubs.generate(
            "tests.bench.chat:gen_push", messages=MESSAGES_QUICK if ctx.quick else MESSAGES
        )


@scenario(
    "chat-redis",
    "chat across two instances through Redis",
    [Target("p99_ms", 10)],
    needs=["rpc:chat.send"],
    note="A on instance 1, B on instance 2, both on Redis",
)
async def run_chat_redis(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick, instances=2, redis=True) as hubs:
        return await hubs.generate(
            "tests.bench.chat:gen_push", messages=MESSAGES_QUICK if ctx.quick else MESSAGES
        )


# -- send and wait ---------------------------------------------------------------------

THINK_SECONDS = 0.0


async def _replier(b: HubClient, stop: asyncio.Event) -> None:
    """B answers every message it gets, after THINK_SECONDS."""
    while not stop.is_set():
        try:
            event = await b.next_event("chat.message", timeout=0.5)
        except TimeoutError:
            continue
        data = event["data"]
        if not data.get("sender_waiting"):  # B's own replies come back too
            continue
        if THINK_SECONDS:
            await asyncio.sleep(THINK_SECONDS)
        await b.call("chat.send", session_id=data["session_id"], body="re: " + data["body"])


async def gen_wait(spec: dict[str, Any]) -> Metrics:
    count = spec["messages"]
    (pair,) = await _pairs(spec, 1)
    a, b, sid = pair
    stop = asyncio.Event()
    replier = asyncio.create_task(_replier(b, stop))
    rounds: list[float] = []
    try:
        for i in range(30):  # warm-up
            await a.call("chat.send", session_id=sid, body=f"warm-{i}", wait=10)
        m = meter(spec).start()
        for i in range(count):
            t0 = time.perf_counter()
            result = await a.call("chat.send", session_id=sid, body=f"q-{i}", wait=10)
            rounds.append(time.perf_counter() - t0 - THINK_SECONDS)
            if result["status"] != "replied":
                raise AssertionError(f"send-and-wait returned {result['status']}")
        usage = m.stop()
    finally:
        stop.set()
        await replier
        await close_all([a, b])
    return {
        **percentiles(rounds),
        "think_ms": THINK_SECONDS * 1000,
        "hub_cpu_pct": usage["hub_cpu_pct"],
        "pg_cpu_pct": usage["pg_cpu_pct"],
        "gen_cpu_pct": usage["gen_cpu_pct"],
        "others_cpu_pct": usage["others_cpu_pct"],
        "load1": usage["load1"],
    }


@scenario(
    "chat-wait",
    "chat `send` with `wait`: A's call returns after B's reply",
    [Target("p99_ms", 10)],
    needs=["rpc:chat.send"],
    note="B replies as soon as the push arrives (think time 0), so the figure is all hub",
)
async def run_chat_wait(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        return await hubs.generate(
            "tests.bench.chat:gen_wait", messages=MESSAGES_QUICK // 2 if ctx.quick else 1000
        )


# -- 50 waiting senders, nothing flowing -------------------------------------------------

WAITERS = 50


async def gen_waiting_cpu(spec: dict[str, Any]) -> Metrics:
    hub = spec["hubs"][0]
    (team,) = await onboard_teams(hub["http"], 1, 2 * WAITERS)
    senders = [
        await HubClient(hub["ws"], a["api_key"], reconnect=False).connect() for a in team[::2]
    ]
    receivers = [
        await HubClient(hub["ws"], a["api_key"], reconnect=False).connect() for a in team[1::2]
    ]
    calls = [
        asyncio.ensure_future(s.call("chat.send", to=[r["alias"]], body="ping?", wait=120))
        for s, r in zip(senders, team[1::2], strict=True)
    ]
    got = [await r.next_event("chat.message", timeout=20) for r in receivers]
    await asyncio.sleep(1.0)  # let the waits settle
    if any(c.done() for c in calls):
        raise AssertionError("a waiting sender returned before any reply")
    m = meter(spec).start()
    await asyncio.sleep(spec["seconds"])
    usage = m.stop()
    for r, event in zip(receivers, got, strict=True):
        await r.call("chat.send", session_id=event["data"]["session_id"], body="pong")
    results = await asyncio.wait_for(asyncio.gather(*calls), 20)
    replied = sum(1 for r in results if r["status"] == "replied")
    await close_all(senders + receivers)
    return {
        "hub_pg_cpu_pct": usage["hub_cpu_pct"] + usage["pg_cpu_pct"],
        "hub_cpu_pct": usage["hub_cpu_pct"],
        "pg_cpu_pct": usage["pg_cpu_pct"],
        "replied": float(replied),
        "wall_s": usage["wall_s"],
        "others_cpu_pct": usage["others_cpu_pct"],
        "load1": usage["load1"],
    }


@scenario(
    "waiting-cpu",
    f"hub + PostgreSQL CPU while {WAITERS} senders wait on chat replies and nothing flows",
    [Target("hub_pg_cpu_pct", 1.0), Target("replied", WAITERS, higher_is_better=True)],
    needs=["rpc:chat.send"],
    note="measured over 20 s (3 s quick), which spans the hub's 10 s WebSocket pings; "
    "then every receiver answers and every waiting sender must get its reply",
)
async def run_waiting_cpu(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        return await hubs.generate(
            "tests.bench.chat:gen_waiting_cpu", seconds=3 if ctx.quick else 20
        )
