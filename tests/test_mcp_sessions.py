"""``beadhub mcp`` holds the agent's session: presence follows the process
(online while it runs, offline when it exits or is killed), and it rides
out a hub restart (reconnect, resume, a wait picked up again)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client

from protocol.client import HubClient
from tests.mcp_support import call, mcp_processes, stdio_params
from tests.support import HubProcess, RunningHub, onboard, unique


def presence_of(alias: str, online: bool) -> Any:
    return lambda e: e["data"].get("alias") == alias and e["data"].get("online") is online


async def online_aliases(client: HubClient) -> set[str]:
    agents = (await client.call("presence.list", online_only=True))["agents"]
    return {a["alias"] for a in agents}


async def test_online_while_the_process_runs_offline_when_it_exits(hub_server: RunningHub) -> None:
    slug = unique("pres")
    alice = await onboard(hub_server.http_url, slug, "alice")
    bob = await onboard(hub_server.http_url, slug, "bob")
    async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
        async with Client(stdio_params(hub_server.http_url, alice["api_key"])) as client:
            await b.next_event("presence", where=presence_of("alice", True))
            assert "alice" in await online_aliases(b)
            assert (await call(client, "status"))["workspace"]["alias"] == "alice"
        # The client closed the server's stdin and the process ended.
        await b.next_event("presence", where=presence_of("alice", False), timeout=10)
        assert "alice" not in await online_aliases(b)


async def test_offline_within_seconds_when_the_process_is_killed(hub_server: RunningHub) -> None:
    slug = unique("pres")
    alice = await onboard(hub_server.http_url, slug, "alice")
    bob = await onboard(hub_server.http_url, slug, "bob")
    async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
        with contextlib.suppress(Exception):
            async with Client(stdio_params(hub_server.http_url, alice["api_key"])) as client:
                await b.next_event("presence", where=presence_of("alice", True))
                await call(client, "status")
                (process,) = mcp_processes()
                process.send_signal(signal.SIGKILL)
                await b.next_event("presence", where=presence_of("alice", False), timeout=10)
        assert "alice" not in await online_aliases(b)


@pytest.fixture
async def hub_process(database_url: str) -> AsyncIterator[HubProcess]:
    """A real ``beadhub serve`` that the test can kill and start again."""
    hub = HubProcess(env={"DATABASE_URL": database_url, "REDIS_URL": "memory://"})
    await asyncio.to_thread(hub.start)
    try:
        yield hub
    finally:
        await asyncio.to_thread(hub.stop)


async def test_a_hub_restart_is_ridden_out_and_a_wait_picked_up_again(
    hub_process: HubProcess,
) -> None:
    slug = unique("restart")
    alice = await onboard(hub_process.http_url, slug, "alice")
    bob = await onboard(hub_process.http_url, slug, "bob")
    async with (
        HubClient(hub_process.ws_url, bob["api_key"], max_backoff=0.5) as b,
        Client(
            stdio_params(hub_process.http_url, alice["api_key"]), read_timeout_seconds=90
        ) as client,
    ):
        waiting = asyncio.create_task(
            client.call_tool("chat_send", {"to": ["bob"], "body": "still there?", "wait": 60})
        )
        asked = await b.next_event("chat.message", timeout=30)
        session_id = asked["data"]["session_id"]

        hub_process.kill()  # a crash: no shutdown code runs
        b.pending_events()  # what bob heard before: alice's first "online"
        await asyncio.to_thread(hub_process.start)
        await b.wait_connected(30)
        # Alice's session comes back by itself: she is online again (bob
        # hears it live, or in his own resume's replay).
        await b.next_event("presence", where=presence_of("alice", True), timeout=30)
        assert "alice" in await online_aliases(b)

        await b.call("chat.send", session_id=session_id, body="yes, after the restart")
        result = await asyncio.wait_for(waiting, 60)
        assert not result.is_error, result.content
        answer = result.structured_content or {}
        assert answer["status"] == "replied"
        assert answer["reply"]["body"] == "yes, after the restart"

        # Writes go through the resumed session, and only once.
        sent = await call(client, "mail_send", to=["bob"], body="one copy")
        inbox = await b.call("mail.inbox")
        assert [m["message_id"] for m in inbox["messages"]].count(sent["message_id"]) == 1
