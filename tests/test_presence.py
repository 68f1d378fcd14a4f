"""Presence comes from the connection: online while a session is open,
offline (announced to the team) when the last one closes."""

from __future__ import annotations

import httpx

from protocol.client import HubClient
from tests.support import RunningHub, onboard, unique


def _presence_of(alias: str, online: bool):
    return lambda e: e["data"]["alias"] == alias and e["data"]["online"] is online


async def test_team_sees_an_agent_come_online_and_go_offline(any_server: RunningHub):
    slug = unique("proj")
    alice = await onboard(any_server.http_url, slug, "alice")
    bob = await onboard(any_server.http_url, slug, "bob")
    async with HubClient(any_server.ws_url, alice["api_key"]) as a:
        bob_client = await HubClient(any_server.ws_url, bob["api_key"]).connect()
        await a.next_event("presence", where=_presence_of("bob", True), timeout=2)
        listed = {x["alias"]: x["online"] for x in (await a.call("presence.list"))["agents"]}
        assert listed == {"alice": True, "bob": True}

        await bob_client.close()
        event = await a.next_event("presence", where=_presence_of("bob", False), timeout=2)
        assert event["data"]["last_seen"]
        listed = {x["alias"]: x["online"] for x in (await a.call("presence.list"))["agents"]}
        assert listed == {"alice": True, "bob": False}


async def test_an_agent_with_two_sessions_stays_online_until_both_close(join, connect, hub_server):
    alice = await join("alice")
    bob = await join("bob")
    a = await connect(alice)
    b1 = await HubClient(hub_server.ws_url, bob["api_key"]).connect()
    b2 = await HubClient(hub_server.ws_url, bob["api_key"]).connect()
    await a.next_event("presence", where=_presence_of("bob", True))
    await b1.close()
    # The remaining session keeps bob online: the next presence event about
    # bob is the offline one sent after the second close, not before.
    online = {x["alias"]: x["online"] for x in (await a.call("presence.list"))["agents"]}
    assert online["bob"] is True
    await b2.close()
    await a.next_event("presence", where=_presence_of("bob", False), timeout=2)
    assert a.pending_events() == []


async def test_presence_update_reaches_the_team(join, connect):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    await b.call(
        "presence.update",
        repo="widgets",
        branch="feat/api",
        program="claude-code",
        model="opus",
        role="backend",
        focus="bd-12: API endpoints",
    )
    event = await a.next_event(
        "presence", where=lambda e: e["data"]["alias"] == "bob" and e["data"]["branch"]
    )
    assert event["data"]["branch"] == "feat/api"
    assert event["data"]["focus"] == "bd-12: API endpoints"
    status = await a.call("status.get")
    bob_row = next(x for x in status["agents"] if x["alias"] == "bob")
    assert (bob_row["program"], bob_row["role"], bob_row["online"]) == (
        "claude-code",
        "backend",
        True,
    )


async def test_projects_never_see_each_other(hub_server, connect):
    mine = await onboard(hub_server.http_url, unique("proj"), "alice")
    theirs = await onboard(hub_server.http_url, unique("proj"), "mallory")
    a = await connect(mine)
    await connect(theirs)
    aliases = [x["alias"] for x in (await a.call("presence.list"))["agents"]]
    assert aliases == ["alice"]
    assert all(e["data"].get("alias") != "mallory" for e in a.pending_events())


async def test_init_canonicalises_the_repo_and_suggests_aliases(hub_server):
    slug = unique("proj")
    first = await onboard(
        hub_server.http_url,
        slug,
        None,
        role="frontend",
        repo_origin="git@github.com:Acme/Widgets.git",
    )
    second = await onboard(
        hub_server.http_url,
        slug,
        None,
        role="frontend",
        repo_origin="https://github.com/Acme/Widgets",
    )
    assert first["canonical_origin"] == second["canonical_origin"] == "github.com/Acme/Widgets"
    assert first["repo_id"] == second["repo_id"]
    assert first["alias"] == "alice-frontend" and second["alias"] == "bob-frontend"
    assert first["api_key"].startswith("aw_sk_") and first["api_key"] != second["api_key"]


async def test_init_refuses_to_hand_an_alias_to_anyone_without_proof(hub_server):
    slug = unique("proj")
    await onboard(hub_server.http_url, slug, "alice", workspace_path="/a")
    async with httpx.AsyncClient(base_url=hub_server.http_url) as http:
        taken = await http.post(
            "/v1/init",
            json={"project_slug": slug, "alias": "alice", "workspace_path": "/elsewhere"},
        )
        bad = await http.post("/v1/init", json={"project_slug": "Not A Slug!", "alias": "x"})
        again = await http.post(
            "/v1/init",
            json={
                "project_slug": slug,
                "alias": "alice",
                "hostname": "test-host",
                "workspace_path": "/a",
            },
        )
    assert taken.status_code == 409 and "alias_exists" in taken.json()["detail"]
    assert bad.status_code == 422 and "slug" in bad.json()["detail"]
    # The same hostname and path as alice's prove nothing: anyone can read them.
    assert again.status_code == 409 and "alias_exists" in again.json()["detail"]


async def test_an_agent_is_listed_online_as_soon_as_its_connect_returns(join, connect):
    alice, bob = await join("alice"), await join("bob")
    a = await connect(alice)
    await connect(bob)
    online = {x["alias"] for x in (await a.call("presence.list", online_only=True))["agents"]}
    assert online == {"alice", "bob"}
    # and alice, subscribed before her connect returned, saw bob arrive
    await a.next_event("presence", where=_presence_of("bob", True), timeout=2)


async def test_a_socket_that_stops_answering_pings_is_closed_and_goes_offline(database_url):
    """A client whose process hangs (the TCP connection stays open, nothing
    answers) must not stay online: the hub's pings go unanswered and it
    closes the socket."""
    import asyncio
    import base64
    import os

    from tests.support import running_hub

    async with running_hub(
        database_url=database_url, ws_ping_interval=0.3, ws_ping_timeout=0.3
    ) as server:
        slug = unique("proj")
        alice = await onboard(server.http_url, slug, "alice")
        bob = await onboard(server.http_url, slug, "bob")
        async with HubClient(server.ws_url, alice["api_key"]) as a:
            # A hand-made handshake, after which bob never reads a byte, so
            # he never answers a ping.
            reader, writer = await asyncio.open_connection(
                server.settings.host, server.settings.port
            )
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                (
                    "GET /v1/ws HTTP/1.1\r\n"
                    f"Host: {server.settings.host}:{server.settings.port}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                    f"Authorization: Bearer {bob['api_key']}\r\n\r\n"
                ).encode()
            )
            await writer.drain()
            status = await reader.readline()
            assert b"101" in status
            await a.next_event("presence", where=_presence_of("bob", True), timeout=5)
            await a.next_event("presence", where=_presence_of("bob", False), timeout=5)
            writer.close()


async def test_an_http_agent_goes_offline_when_its_heartbeat_lapses(join, connect, hub_server):
    """bdh keeps presence with heartbeats; when they stop, the team is told
    (the TTL here is one second so the test stays short)."""
    alice, bob = await join("alice"), await join("bob")
    a = await connect(alice)
    async with httpx.AsyncClient(
        base_url=hub_server.http_url, headers={"Authorization": f"Bearer {bob['api_key']}"}
    ) as http:
        refreshed = await http.post(
            "/v1/agents/register",
            json={"workspace_id": bob["agent_id"], "alias": "bob", "ttl_seconds": 1},
        )
    assert refreshed.status_code == 200, refreshed.text
    await a.next_event("presence", where=_presence_of("bob", True), timeout=2)
    await a.next_event("presence", where=_presence_of("bob", False), timeout=5)
    listed = {x["alias"]: x["online"] for x in (await a.call("presence.list"))["agents"]}
    assert listed == {"alice": True, "bob": False}
