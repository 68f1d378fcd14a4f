"""Unsticking the team: stale claims and reservations (holder offline), a
human reassigning a claim (announced to the agents), the hourly stats."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from protocol.errors import ErrorCode, RpcError
from tests.support import human_ticket, onboard, unique


def _issues(*ids: str) -> str:
    return "\n".join(
        orjson.dumps({"id": i, "title": f"issue {i}", "status": "open", "priority": 1}).decode()
        for i in ids
    )


async def test_a_gone_holders_claim_is_stale_and_reassigned(join, connect, hub_server):
    alice = await join("alice", human_name="Ana")
    bob, carol = await join("bob"), await join("carol")
    b, c = await connect(bob), await connect(carol)
    await b.call("beads.sync", mode="full", issues_jsonl=_issues("bd-1", "bd-2"))
    await b.call("claims.claim", bead_id="bd-1")
    await b.call("reservations.acquire", paths=["src/a.py"])
    await c.call("claims.claim", bead_id="bd-2")
    lead = await connect({"api_key": None}, ticket=await human_ticket(hub_server.http_url, alice))
    assert (await lead.call("team.stale")) == {"claims": [], "reservations": []}

    await b.close()
    await c.next_event("presence", where=lambda e: e["data"]["alias"] == "bob")
    stale = await lead.call("team.stale")
    assert [x["bead_id"] for x in stale["claims"]] == ["bd-1"]
    assert [x["path"] for x in stale["reservations"]] == ["src/a.py"]
    assert stale["claims"][0]["last_seen"] is not None

    moved = await lead.call("claims.reassign", bead_id="bd-1", to="carol")
    assert (moved["from_alias"], moved["claim"]["alias"]) == ("bob", "carol")
    released = await c.next_event("claim.released", where=lambda e: e["data"]["bead_id"] == "bd-1")
    assert (released["data"]["reason"], released["data"]["by"]) == ("reassigned", "human:Ana")
    acquired = await c.next_event("claim.acquired", where=lambda e: e["data"]["bead_id"] == "bd-1")
    assert acquired["data"]["alias"] == "carol"
    claims = {x["bead_id"]: x["alias"] for x in (await c.call("claims.list"))["claims"]}
    assert claims == {"bd-1": "carol", "bd-2": "carol"}


async def test_reassign_refuses_agents_unknown_targets_and_other_projects(
    join, connect, hub_server
):
    alice = await join("alice", role="coordinator")
    a = await connect(alice)
    await a.call("beads.sync", mode="full", issues_jsonl=_issues("bd-1"))
    await a.call("claims.claim", bead_id="bd-1")
    with pytest.raises(RpcError) as info:
        await a.call("claims.reassign", bead_id="bd-1", to="alice")
    assert info.value.code == ErrorCode.FORBIDDEN
    lead = await connect({"api_key": None}, ticket=await human_ticket(hub_server.http_url, alice))
    with pytest.raises(RpcError) as info:
        await lead.call("claims.reassign", bead_id="bd-1", to="nobody")
    assert info.value.code == ErrorCode.NOT_FOUND
    other = await onboard(hub_server.http_url, unique("other"), "eve")
    stranger = await connect(
        {"api_key": None}, ticket=await human_ticket(hub_server.http_url, other)
    )
    with pytest.raises(RpcError) as info:
        await stranger.call("claims.reassign", bead_id="bd-1", to="eve")
    assert info.value.code == ErrorCode.NOT_FOUND
    assert (await a.call("claims.list"))["claims"][0]["alias"] == "alice"


async def test_stats_count_the_projects_own_work_per_hour(join, connect, hub_server):
    alice = await join("alice", human_name="Ana")
    a, b = await connect(alice), await connect(await join("bob"))
    await a.call("mail.send", to=["bob"], body="one")
    await b.call("chat.send", to=["alice"], body="two")
    await a.call("beads.sync", mode="full", issues_jsonl=_issues("bd-1"))
    await a.call("claims.claim", bead_id="bd-1")
    await a.call("claims.release", bead_id="bd-1")
    asked = await b.call("escalations.create", subject="s", situation="x")
    lead = await connect({"api_key": None}, ticket=await human_ticket(hub_server.http_url, alice))
    await lead.call("escalations.respond", escalation_id=asked["escalation_id"], response="ok")
    # Another project's work is not counted.
    eve = await connect(await onboard(hub_server.http_url, unique("other"), "eve"))
    await eve.call("escalations.create", subject="elsewhere", situation="x")

    stats = await lead.call("stats.get", hours=3)
    assert len(stats["series"]) in (3, 4)
    totals = {
        k: sum(h[k] for h in stats["series"])
        for k in ("messages", "claims_opened", "claims_closed", "escalations")
    }
    assert totals == {"messages": 2, "claims_opened": 1, "claims_closed": 1, "escalations": 1}
    assert stats["answers"]["answered"] == 1
    assert stats["answers"]["median_seconds"] >= 0
    with pytest.raises(RpcError) as info:
        await lead.call("stats.get", hours=0)
    assert info.value.code == ErrorCode.INVALID_PARAMS


async def test_the_lead_sees_agents_in_line_for_a_file(join, connect, hub_server):
    alice = await join("alice", human_name="Ana")
    b, c = await connect(await join("bob")), await connect(await join("carol"))
    await b.call("reservations.acquire", paths=["src/app.py"])
    queued = asyncio.create_task(c.call("reservations.acquire", paths=["src/app.py"], wait=30))
    lead = await connect({"api_key": None}, ticket=await human_ticket(hub_server.http_url, alice))

    async def in_line() -> list[dict]:
        while True:
            waiting = (await lead.call("team.waiting"))["waiting"]
            items = [w for w in waiting if w["kind"] == "queue"]
            if items:
                return items
            await asyncio.sleep(0.05)

    [entry] = await asyncio.wait_for(in_line(), 10)
    assert (entry["alias"], entry["waiting_on"], entry["position"]) == ("carol", ["src/app.py"], 1)
    await b.call("reservations.release", paths=["src/app.py"])
    granted = await asyncio.wait_for(queued, 10)
    assert [g["path"] for g in granted["granted"]] == ["src/app.py"]
