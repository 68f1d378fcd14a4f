"""Escalations to the end: expiry announced once (timer or sweep), answering
an expired one is a clear CONFLICT, and answered ones keep who and when."""

from __future__ import annotations

import asyncpg
import pytest

from hub.services import escalations
from protocol.errors import ErrorCode, RpcError
from tests.support import human_ticket


async def test_expiry_is_announced_and_an_expired_one_cannot_be_answered(join, connect, hub_server):
    alice = await join("alice", human_name="Ana")
    b = await connect(await join("bob"))
    lead = await connect({"api_key": None}, ticket=await human_ticket(hub_server.http_url, alice))
    created = await b.call(
        "escalations.create", subject="Deploy now?", situation="prod is red", expires_in_seconds=1
    )
    event = await lead.next_event("escalation.expired", timeout=10)
    assert event["data"]["escalation_id"] == created["escalation_id"]
    assert event["data"]["status"] == "expired"
    assert (await b.next_event("escalation.expired", timeout=5))["id"] == event["id"]

    with pytest.raises(RpcError) as info:
        await lead.call(
            "escalations.respond", escalation_id=created["escalation_id"], response="go"
        )
    assert info.value.code == ErrorCode.CONFLICT
    assert info.value.data["status"] == "expired"
    assert "expired" in info.value.message
    # Announced once: a sweep finds nothing left to announce.
    assert await escalations.announce_expired(hub_server.hub, alice["project_id"]) == 0


async def test_the_sweep_announces_what_no_timer_did(join, connect, hub_server, database_url):
    alice = await join("alice")
    a = await connect(alice)
    # An escalation whose instance died before its timer fired.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO escalations (project_id, agent_id, alias, subject, situation, expires_at) "
            "VALUES ($1, $2, 'alice', 'orphan', 'x', now() - interval '1 minute')",
            alice["project_id"],
            alice["agent_id"],
        )
    finally:
        await conn.close()
    assert await escalations.sweep(hub_server.hub) >= 1
    event = await a.next_event("escalation.expired", timeout=5)
    assert event["data"]["subject"] == "orphan"
    assert await escalations.announce_expired(hub_server.hub, alice["project_id"]) == 0


async def test_history_of_answered_ones_says_who_and_when(join, connect, hub_server):
    alice = await join("alice", human_name="Ana")
    b = await connect(await join("bob"))
    lead = await connect({"api_key": None}, ticket=await human_ticket(hub_server.http_url, alice))
    asked = await b.call("escalations.create", subject="Rename the table?", situation="x")
    await lead.call("escalations.respond", escalation_id=asked["escalation_id"], response="yes")
    [done] = (await lead.call("escalations.list", status="answered"))["escalations"]
    assert (done["responded_by"], done["response"]) == ("Ana", "yes")
    assert done["responded_at"] >= done["created_at"]
