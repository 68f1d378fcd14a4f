"""Durable mail over WebSocket: 64 agents sending at once, and proof that
every acknowledged message was committed before its ack."""

from __future__ import annotations

from typing import Any

import asyncpg

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
from tests.support import dsn_for

AGENTS = 64
TEAM = 8
#: One ack in this many is checked at once from another connection.
CHECK_EVERY = 50


@scenario(
    "mail",
    f"durable mail send over WebSocket, {AGENTS} concurrent agents",
    [
        Target("rate", 5000, higher_is_better=True),
        Target("uncommitted_acks", 0),
        Target("lost", 0),
    ],
    needs=["rpc:mail.send"],
    note=f"{AGENTS} agents in teams of {TEAM}, each sending to the next teammate in a closed "
    f"loop; 1 ack in {CHECK_EVERY} is looked up at once from a separate PostgreSQL "
    "connection (uncommitted_acks), and the stored count must equal the acks (lost)",
)
async def run_mail(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        return await hubs.generate(
            "tests.bench.mail:gen_mail", seconds=3 if ctx.quick else 10, agents=AGENTS
        )


async def gen_mail(spec: dict[str, Any]) -> Metrics:
    hub = spec["hubs"][0]
    teams = await onboard_teams(hub["http"], spec["agents"] // TEAM, TEAM)
    agents = [a for team in teams for a in team]
    clients = await connect_all(hub["ws"], agents)
    db = await asyncpg.create_pool(dsn_for(spec["database"]), min_size=1, max_size=4)
    acked = 0
    uncommitted = 0

    def sender(k: int) -> Any:
        client = clients[k]
        team = teams[k // TEAM]
        to = team[(k % TEAM + 1) % TEAM]["alias"]

        async def op(i: int) -> None:
            nonlocal acked, uncommitted
            sent = await client.call("mail.send", to=[to], subject="bench", body=f"message {i}")
            acked += 1
            if i % CHECK_EVERY == 0:
                found = await db.fetchval(
                    "SELECT count(*) FROM mail_messages WHERE id = $1::uuid", sent["message_id"]
                )
                uncommitted += found == 0
            if i % 200 == 0:
                drain(client)

        return op

    try:
        result = await closed_loop(
            [sender(k) for k in range(len(clients))], spec["seconds"], meter=meter(spec)
        )
        stored = await db.fetchval("SELECT count(*) FROM mail_messages")
    finally:
        await db.close()
        await close_all(clients)
    return {
        **result.metrics(),
        "uncommitted_acks": float(uncommitted),
        "lost": float(acked - stored),
    }


# -- the ceiling: PostgreSQL alone ---------------------------------------------------------

FLOOR_BATCH = 16


@scenario(
    "mail-pg-floor",
    "PostgreSQL alone: the hub's grouped mail sends without the hub (ceiling for `mail`)",
    [],
    needs=["rpc:mail.send"],
    note=f"the hub's own batch statement (hub.services.mail.write_sends), {FLOOR_BATCH} sends "
    "per statement and commit (as group commit writes them), run straight from the generator "
    "by 4 workers on their own connections: what PostgreSQL on this machine allows at most "
    "(rate is messages/s)",
)
async def run_mail_pg_floor(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        return await hubs.generate(
            "tests.bench.mail:gen_mail_pg_floor", seconds=3 if ctx.quick else 10, agents=AGENTS
        )


async def gen_mail_pg_floor(spec: dict[str, Any]) -> Metrics:
    import uuid

    from hub.services import mail as mail_service
    from hub.store.pool import _init_connection

    hub = spec["hubs"][0]
    teams = await onboard_teams(hub["http"], spec["agents"] // TEAM, TEAM)
    agents = [a for team in teams for a in team]
    db = await asyncpg.create_pool(
        dsn_for(spec["database"]), min_size=4, max_size=4, init=_init_connection
    )

    def send(k: int, i: int) -> tuple[Any, ...]:
        me = agents[k % len(agents)]
        to = teams[k % len(agents) // TEAM][(k % TEAM + 1) % TEAM]
        return (
            str(uuid.uuid4()), me["project_id"], me["agent_id"], me["alias"], "bench",
            f"message {i}", "normal", None, False, [to["alias"]], [],
        )  # fmt: skip

    def writer(w: int) -> Any:
        async def op(i: int) -> None:
            calls = [send(w * FLOOR_BATCH + j, i) for j in range(FLOOR_BATCH)]
            async with db.acquire() as conn:
                rows = await mail_service.write_sends(conn, calls)
            assert all(row["ev_seq"] is not None for row in rows)

        return op

    try:
        result = await closed_loop(
            [writer(w) for w in range(4)], spec["seconds"], meter=meter(spec)
        )
    finally:
        await db.close()
    figures = result.metrics()
    figures["rate"] *= FLOOR_BATCH
    for who in ("hub", "pg", "gen"):
        if f"{who}_us_per_op" in figures:
            figures[f"{who}_us_per_op"] /= FLOOR_BATCH
    return figures
