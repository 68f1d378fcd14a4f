"""Escalations: an agent asks, a human (or the coordinator) answers once,
the agent gets the answer; expired questions cannot be answered."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from hub.services.clock import now, parse
from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.support import RunningHub, grant_coordinator, onboard, sign_in_human, unique


async def open_dashboard(server: RunningHub, agent: dict[str, Any]) -> HubClient:
    """A human's dashboard session for the agent's project, signed in with
    the operator's credential."""
    signed_in = await sign_in_human(server, agent["project_slug"], agent["human_name"] or "juan")
    return await HubClient(server.ws_url, ticket=signed_in["ticket"]).connect()


def about(escalation_id: str):
    return lambda e: e["data"]["escalation_id"] == escalation_id


async def rpc_error(awaitable: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        await awaitable
    return info.value


async def test_a_human_sees_the_escalation_and_the_agent_gets_the_answer(any_server: RunningHub):
    slug = unique("proj")
    alice = await onboard(any_server.http_url, slug, "alice", role="developer")
    lead = await onboard(any_server.http_url, slug, "juan", human_name="Juan")
    human = await open_dashboard(any_server, lead)
    agent = await HubClient(any_server.ws_url, alice["api_key"]).connect()
    try:
        created = await agent.call(
            "escalations.create",
            subject="Need a decision on bd-12",
            situation="Both **bob** and I need `auth.py`. Who goes first?",
            bead_id="bd-12",
        )
        assert created["status"] == "pending"
        assert created["alias"] == "alice"
        lifetime = parse(created["expires_at"]) - parse(created["created_at"])
        assert timedelta(hours=23) < lifetime <= timedelta(hours=24)

        seen = await human.next_event(
            "escalation.created", where=about(created["escalation_id"]), timeout=2
        )
        assert seen["data"]["subject"] == "Need a decision on bd-12"
        assert seen["data"]["bead_id"] == "bd-12"
        pending = await human.call("escalations.list", status="pending")
        assert [e["escalation_id"] for e in pending["escalations"]] == [created["escalation_id"]]
        assert pending["escalations"][0]["situation"].startswith("Both **bob**")
        assert (await agent.call("status.get"))["escalations_pending"] == 1

        answered = await human.call(
            "escalations.respond",
            escalation_id=created["escalation_id"],
            response="Bob first; take bd-14 meanwhile.",
        )
        assert answered["status"] == "answered"
        assert answered["responded_by"] == "Juan"

        event = await agent.next_event(
            "escalation.answered", where=about(created["escalation_id"]), timeout=2
        )
        assert event["data"]["response"] == "Bob first; take bd-14 meanwhile."
        assert event["data"]["responded_by"] == "Juan"
        assert (event["data"]["agent_id"], event["data"]["alias"]) == (alice["agent_id"], "alice")
        assert event["data"]["subject"] == "Need a decision on bd-12"

        mine = await agent.call("escalations.get", escalation_id=created["escalation_id"])
        assert mine["status"] == "answered"
        assert mine["response"] == "Bob first; take bd-14 meanwhile."
        assert mine["responded_at"]
        assert (await agent.call("status.get"))["escalations_pending"] == 0
        assert (await human.call("escalations.list", status="pending"))["escalations"] == []
        answered_list = await human.call("escalations.list", status="answered")
        assert [e["escalation_id"] for e in answered_list["escalations"]] == [
            created["escalation_id"]
        ]
    finally:
        await agent.close()
        await human.close()


async def test_only_humans_and_coordinators_answer_and_only_once(join, connect, hub_server):
    alice = await join("alice", role="developer")
    bob = await join("bob", role="developer")
    carol = await grant_coordinator(hub_server, await join("carol", role="coordinator"))
    # A role an agent declares for itself grants nothing.
    dave = await join("dave", role="coordinator")
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    d = await connect(dave)
    human = await open_dashboard(hub_server, alice)
    try:
        esc = await a.call("escalations.create", subject="Stuck", situation="CI is red")
        eid = esc["escalation_id"]

        for who in (b, a, d):
            error = await rpc_error(
                who.call("escalations.respond", escalation_id=eid, response="x")
            )
            assert error.code == ErrorCode.FORBIDDEN
        assert (await a.call("escalations.get", escalation_id=eid))["status"] == "pending"

        answer = await c.call("escalations.respond", escalation_id=eid, response="Retry it")
        assert answer["responded_by"] == "carol"

        again = await rpc_error(
            human.call("escalations.respond", escalation_id=eid, response="No, revert")
        )
        assert again.code == ErrorCode.CONFLICT
        assert again.data["responded_by"] == "carol"
        final = await a.call("escalations.get", escalation_id=eid)
        assert (final["response"], final["responded_by"]) == ("Retry it", "carol")
    finally:
        await human.close()


async def test_of_two_concurrent_answers_exactly_one_wins(join, connect, hub_server):
    alice = await join("alice")
    carol = await grant_coordinator(hub_server, await join("carol", role="coordinator"))
    a, c = await connect(alice), await connect(carol)
    human = await open_dashboard(hub_server, alice)
    try:
        eid = (await a.call("escalations.create", subject="Race", situation="Who answers?"))[
            "escalation_id"
        ]
        results = await asyncio.gather(
            c.call("escalations.respond", escalation_id=eid, response="from carol"),
            human.call("escalations.respond", escalation_id=eid, response="from human"),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, dict)]
        losses = [r for r in results if isinstance(r, RpcError)]
        assert len(wins) == 1
        assert [e.code for e in losses] == [ErrorCode.CONFLICT]
        stored = await a.call("escalations.get", escalation_id=eid)
        assert stored["response"] == wins[0]["response"]
    finally:
        await human.close()


async def test_an_expired_escalation_shows_expired_and_cannot_be_answered(
    join, connect, hub_server
):
    alice = await join("alice")
    a = await connect(alice)
    human = await open_dashboard(hub_server, alice)
    try:
        esc = await a.call(
            "escalations.create", subject="Quick one", situation="...", expires_in_seconds=1
        )
        eid = esc["escalation_id"]
        assert esc["status"] == "pending"
        # Bounded wait (at most 5 s) for the clock to pass expires_at; the
        # status is computed when read, nothing sweeps it.
        for _ in range(50):
            status = (await human.call("escalations.get", escalation_id=eid))["status"]
            if status != "pending":
                break
            await asyncio.sleep(0.1)
        assert status == "expired"
        assert now() >= parse(esc["expires_at"])

        error = await rpc_error(
            human.call("escalations.respond", escalation_id=eid, response="too late")
        )
        assert error.code == ErrorCode.CONFLICT
        assert error.data["status"] == "expired"
        assert (await human.call("escalations.get", escalation_id=eid))["response"] is None
        expired = await human.call("escalations.list", status="expired")
        assert [e["escalation_id"] for e in expired["escalations"]] == [eid]
        assert (await human.call("escalations.list", status="pending"))["escalations"] == []
        assert (await a.call("status.get"))["escalations_pending"] == 0
    finally:
        await human.close()


async def test_bad_escalations_are_refused_and_change_nothing(join, connect, hub_server):
    alice = await join("alice")
    bob = await join("bob")
    a, b = await connect(alice), await connect(bob)
    human = await open_dashboard(hub_server, alice)
    try:
        too_long = await rpc_error(a.call("escalations.create", subject="x" * 201, situation="y"))
        assert too_long.code == ErrorCode.INVALID_PARAMS
        empty = await rpc_error(a.call("escalations.create", subject="Help", situation=""))
        assert empty.code == ErrorCode.INVALID_PARAMS
        huge = await rpc_error(a.call("escalations.create", subject="Help", situation="z" * 20_001))
        assert huge.code == ErrorCode.INVALID_PARAMS
        by_human = await rpc_error(human.call("escalations.create", subject="Hi", situation="hi"))
        assert by_human.code == ErrorCode.FORBIDDEN
        assert (await a.call("escalations.list"))["escalations"] == []

        missing = await rpc_error(
            a.call("escalations.get", escalation_id="00000000-0000-0000-0000-000000000000")
        )
        assert missing.code == ErrorCode.NOT_FOUND

        mine = await a.call("escalations.create", subject="Mine", situation="alice's")
        await b.call("escalations.create", subject="Bob's", situation="bob's")
        listed = await a.call("escalations.list", mine=True)
        assert [e["escalation_id"] for e in listed["escalations"]] == [mine["escalation_id"]]
        assert len((await human.call("escalations.list"))["escalations"]) == 2
    finally:
        await human.close()


async def test_projects_never_see_each_others_escalations(hub_server, connect):
    mine = await onboard(hub_server.http_url, unique("proj"), "alice")
    theirs = await onboard(hub_server.http_url, unique("proj"), "mallory", role="coordinator")
    await grant_coordinator(hub_server, theirs)
    a, m = await connect(mine), await connect(theirs)
    their_human = await open_dashboard(hub_server, theirs)
    try:
        eid = (await a.call("escalations.create", subject="Private", situation="secret"))[
            "escalation_id"
        ]
        for client in (m, their_human):
            got = await rpc_error(client.call("escalations.get", escalation_id=eid))
            assert got.code == ErrorCode.NOT_FOUND
            answer = await rpc_error(
                client.call("escalations.respond", escalation_id=eid, response="mine now")
            )
            assert answer.code == ErrorCode.NOT_FOUND
            assert (await client.call("escalations.list"))["escalations"] == []
        assert (await m.call("status.get"))["escalations_pending"] == 0

        # Their dashboard's next escalation event is their own project's.
        own = await m.call("escalations.create", subject="Theirs", situation="theirs")
        event = await their_human.next_event("escalation.created", timeout=2)
        assert event["data"]["escalation_id"] == own["escalation_id"]
        assert (await a.call("escalations.get", escalation_id=eid))["status"] == "pending"
    finally:
        await their_human.close()
