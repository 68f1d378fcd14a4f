"""Full-text search over a big history, and what its indexes cost the mail
hot path.

A project with 100,000 mail messages over a week (10,000 of them with a
common word, 20 with a rare one), 10,000 chat messages and 1,000
escalations, seeded straight into the store. Then, over WebSocket, one
agent runs ``search.query`` one call at a time: a rare word, a word with
10,000 hits (first page of 50), and page 40 of that word (keyset cursor).
Last, sequential ``mail.send`` latency with the mail search index in place
and after dropping it, in the same database, to show what the GIN entry
adds to a send."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
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
    onboard_teams,
    percentiles,
    scenario,
)
from tests.support import dsn_for

MAIL = 100_000
COMMON_EVERY = 10
RARE = 20
SEARCHES = 60
SENDS = 1500


@scenario(
    "search",
    f"search.query over {MAIL:,} mails (+ chat, escalations), one caller",
    [
        Target("rare_p95_ms", 50),
        Target("common_p95_ms", 100),
        Target("deep_p95_ms", 100),
    ],
    needs=["rpc:search.query"],
    note="sequential calls; common = 10,000 hits, first page of 50; deep = page 40 of 250 "
    "through the keyset cursor; send_indexed/send_unindexed: sequential mail.send p50 with "
    "and without the mail search index",
)
async def run_search(ctx: RunContext) -> Metrics:
    async with cluster(ctx.quick) as hubs:
        return await hubs.generate("tests.bench.search:gen_search", quick=ctx.quick)


async def _seed(db: asyncpg.Pool, a: dict[str, Any], b: dict[str, Any], count: int) -> None:
    now = datetime.now(UTC)
    mails, deliveries = [], []
    for k in range(count):
        mid = uuid.uuid4()
        at = now - timedelta(seconds=7 * 86400 * (k + 1) / (count + 1))
        word = "nightly" if k % COMMON_EVERY == 0 else ""
        if k % (count // RARE) == 1:
            word = "flamingo"
        body = f"build {k} of module m{k % 97} finished {word} with status ok"
        pid, aid = a["project_id"], a["agent_id"]
        mails.append((mid, pid, aid, a["alias"], f"report {k}", body, mid, at))
        deliveries.append((mid, b["agent_id"], a["project_id"], at))
    async with db.acquire() as conn:
        await conn.copy_records_to_table(
            "mail_messages",
            records=mails,
            columns=["id", "project_id", "from_agent_id", "from_alias", "subject", "body",
                     "thread_id", "created_at"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "mail_deliveries",
            records=deliveries,
            columns=["message_id", "recipient_id", "project_id", "created_at"],
        )
        await conn.execute(
            "INSERT INTO escalations (project_id, agent_id, alias, subject, situation, expires_at) "
            "SELECT $1, $2, $3, 'question ' || g, 'situation of build ' || g, "
            "now() + interval '1 day' "
            "FROM generate_series(1, 1000) g",
            a["project_id"],
            a["agent_id"],
            a["alias"],
        )
        await conn.execute("ANALYZE")


async def _timed(client: Any, n: int, **params: Any) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await client.call("search.query", **params)
        samples.append(time.perf_counter() - start)
    return samples


async def gen_search(spec: dict[str, Any]) -> Metrics:
    hub = spec["hubs"][0]
    count = MAIL // 5 if spec["quick"] else MAIL
    [[a, b]] = await onboard_teams(hub["http"], 1, 2)
    db = await asyncpg.create_pool(dsn_for(spec["database"]), min_size=1, max_size=2)
    clients = await connect_all(hub["ws"], [a, b])
    try:
        await _seed(db, a, b, count)
        me = clients[1]
        rare = await _timed(me, SEARCHES, text="flamingo", limit=50)
        common = await _timed(me, SEARCHES, text="nightly", limit=50)
        after = None
        for _ in range(39):
            after = (await me.call("search.query", text="nightly", limit=250, after=after))["next"]
        deep = await _timed(me, SEARCHES, text="nightly", limit=250, after=after)
        sender = clients[0]

        async def sends() -> list[float]:
            samples = []
            for i in range(SENDS):
                start = time.perf_counter()
                await sender.call("mail.send", to=[b["alias"]], body=f"bench send {i}")
                samples.append(time.perf_counter() - start)
                if i % 200 == 0:
                    drain(clients[1])
            return samples

        indexed = await sends()
        await db.execute("DROP INDEX mail_messages_search")
        unindexed = await sends()
        await db.execute(
            "CREATE INDEX mail_messages_search ON mail_messages USING gin "
            "(to_tsvector('english'::regconfig, subject || ' ' || body))"
        )
        indexed_again = await sends()
    finally:
        await close_all(clients)
        await db.close()
    return {
        **percentiles(rare, "rare_"),
        **percentiles(common, "common_"),
        **percentiles(deep, "deep_"),
        "send_indexed_p50_ms": percentiles(indexed + indexed_again, "")["p50_ms"],
        "send_unindexed_p50_ms": percentiles(unindexed, "")["p50_ms"],
        "mail_rows": float(count),
    }
