"""search.query over real sockets and the shim: full-text over mail, chat,
escalations and issues; filters; keyset paging through all history; what
each caller may find."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
import pytest

from protocol.errors import ErrorCode, RpcError
from tests.support import human_ticket, onboard, unique


async def seed_mail(
    database_url: str, agent: dict, to: dict, count: int, word: str, days: int = 7
) -> None:
    """``count`` messages from ``agent`` to ``to`` spread over ``days``,
    written straight into the store (history the hub did not see sent)."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        rows = []
        for k in range(count):
            mid = uuid.uuid4()
            at = now - timedelta(seconds=days * 86400 * (k + 1) / (count + 1))
            rows.append((mid, agent["project_id"], agent["agent_id"], agent["alias"],
                         f"report {k}", f"the {word} run number {k}", mid, at))  # fmt: skip
        await conn.executemany(
            "INSERT INTO mail_messages (id, project_id, from_agent_id, from_alias, subject, "
            "body, thread_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            rows,
        )
        await conn.executemany(
            "INSERT INTO mail_deliveries (message_id, recipient_id, project_id, created_at) "
            "VALUES ($1, $2, $3, $4)",
            [(r[0], to["agent_id"], r[1], r[7]) for r in rows],
        )
    finally:
        await conn.close()


async def test_finds_each_kind_by_its_words(join, connect):
    a_agent, b_agent = await join("alice"), await join("bob")
    a, b = await connect(a_agent), await connect(b_agent)
    await a.call("mail.send", to=["bob"], subject="Flaky invoices", body="rounding fails on CI")
    await b.call("chat.send", to=["alice"], body="the invoice rounding is mine")
    await b.call("escalations.create", subject="Invoice rounding policy?", situation="banker's?")
    await a.call(
        "beads.sync",
        mode="full",
        issues_jsonl=orjson.dumps(
            {"id": "bd-7", "title": "Invoice rounding", "status": "open", "priority": 1,
             "created_at": "2026-11-01T10:00:00Z", "description": "use half-even"}
        ).decode(),
    )  # fmt: skip

    found = await a.call("search.query", text="invoices rounding")
    assert sorted(h["type"] for h in found["hits"]) == ["chat", "escalation", "issue", "mail"]
    assert found["next"] is None
    # Stemming: "failing" finds "fails"; a phrase and an exclusion.
    assert [h["type"] for h in (await a.call("search.query", text="failing"))["hits"]] == ["mail"]
    only = await a.call("search.query", text='"invoice rounding" -policy', types=["escalation"])
    assert only["hits"] == []
    by_bob = await a.call("search.query", text="rounding", agent="bob")
    assert sorted(h["type"] for h in by_bob["hits"]) == ["chat", "escalation", "mail"]
    assert (await a.call("search.query", text="rounding", types=["issue"]))["hits"][0][
        "id"
    ] == "bd-7"


async def test_date_filters_and_paging_through_a_week_of_history(join, connect, database_url):
    alice, bob = await join("alice"), await join("bob")
    await seed_mail(database_url, alice, bob, 1200, "deploy")
    b = await connect(bob)
    seen: list[str] = []
    after = None
    while True:
        page = await b.call("search.query", text="deploy", types=["mail"], limit=500, after=after)
        seen += [h["id"] for h in page["hits"]]
        after = page["next"]
        if after is None:
            break
    assert len(seen) == 1200 and len(set(seen)) == 1200
    times = [h["at"] for h in page["hits"]]
    assert times == sorted(times, reverse=True)

    now = datetime.now(UTC)
    day = await b.call(
        "search.query",
        text="deploy",
        since=(now - timedelta(days=2)).isoformat(),
        until=(now - timedelta(days=1)).isoformat(),
        limit=500,
    )
    assert 150 <= day["count"] <= 190  # a seventh of 1200, give or take the edges
    assert all(now - timedelta(days=2) <= datetime.fromisoformat(h["at"]) for h in day["hits"])


async def test_an_agent_finds_only_what_it_may_read(join, connect, hub_server):
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    a, c = await connect(alice), await connect(carol)
    await a.call("mail.send", to=["bob"], body="the secret migration plan")
    await a.call("chat.send", to=["bob"], body="secret chat")
    assert (await c.call("search.query", text="secret"))["hits"] == []
    # The lead on the dashboard sees everything of the project ...
    lead = await connect({"api_key": None}, ticket=await human_ticket(hub_server.http_url, carol))
    assert len((await lead.call("search.query", text="secret"))["hits"]) == 2
    # ... and another project's key nothing.
    other = await connect(await onboard(hub_server.http_url, unique("other"), "eve"))
    assert (await other.call("search.query", text="secret"))["hits"] == []
    assert bob  # a recipient, not a searcher here


async def test_bad_input_is_a_clear_error(join, connect):
    a = await connect(await join("alice"))
    for params in (
        {"text": ""},
        {"text": "x", "types": ["tweets"]},
        {"text": "x", "after": "not-a-cursor"},
        {"text": "x", "limit": 501},
    ):
        with pytest.raises(RpcError) as info:
            await a.call("search.query", **params)
        assert info.value.code == ErrorCode.INVALID_PARAMS, params


async def test_the_shim_route_searches_and_needs_a_key(join, connect, hub_server):
    alice = await join("alice")
    a = await connect(alice)
    await a.call("escalations.create", subject="Which queue?", situation="kafka or redis")
    async with httpx.AsyncClient(base_url=hub_server.http_url) as http:
        refused = await http.post("/v1/search", json={"text": "kafka"})
        assert refused.status_code == 401
        found = await http.post(
            "/v1/search",
            json={"text": "kafka"},
            headers={"Authorization": f"Bearer {alice['api_key']}"},
        )
    assert found.status_code == 200, found.text
    assert [h["title"] for h in found.json()["hits"]] == ["Which queue?"]
