"""``/mcp`` on two hub instances behind nginx: stateless, so one MCP client
session's requests may land on either instance; a wait on one instance is
woken by a reply on the other; and a wait cut off with its instance is
picked up on the other from the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from mcp import Client

from protocol.client import HubClient
from tests.e2e.cluster import Cluster, running_cluster
from tests.mcp_support import call, http_transport
from tests.support import onboard, unique

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    async with running_cluster() as running:
        yield running


class Alternating(httpx2.AsyncBaseTransport):
    """Sends each HTTP request to the next instance in turn (what a load
    balancer without affinity may do), and notes which served which."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.served: list[int] = []
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = self.ports[len(self.served) % len(self.ports)]
        self.served.append(port)
        request.url = request.url.copy_with(port=port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_one_client_session_alternates_between_instances(cluster: Cluster) -> None:
    slug = unique("mcpc")
    alice = await onboard(cluster.http_url, slug, "alice")
    bob = await onboard(cluster.http_url, slug, "bob")
    ports = [hub.port for hub in cluster.hubs]
    alternating = Alternating(ports)
    server = http_transport(cluster.http_url, alice["api_key"], transport=alternating)
    # Bob listens on the second instance only.
    async with (
        HubClient(cluster.hubs[1].ws_url, bob["api_key"]) as b,
        Client(server, mode="legacy", read_timeout_seconds=60) as client,
    ):
        assert client.protocol_version == "2025-11-25"
        tools = (await client.list_tools()).tools
        assert len(tools) == 17
        for _ in range(4):
            assert (await call(client, "status"))["workspace"]["alias"] == "alice"
        sent = await call(client, "mail_send", to=["bob"], body="from whichever instance")
        assert (await b.next_event("mail"))["data"]["message_id"] == sent["message_id"]

        async def bob_answers() -> None:
            event = await b.next_event("chat.message", timeout=30)
            await b.call("chat.send", session_id=event["data"]["session_id"], body="heard you")

        answering = asyncio.create_task(bob_answers())
        answer = await call(client, "chat_send", to=["bob"], body="across?", wait=30)
        await answering
        assert answer["status"] == "replied" and answer["reply"]["body"] == "heard you"
    assert set(alternating.served) == set(ports)


async def test_through_nginx_with_the_2026_revision(cluster: Cluster) -> None:
    slug = unique("mcpc")
    alice = await onboard(cluster.http_url, slug, "alice")
    await onboard(cluster.http_url, slug, "bob")
    async with Client(http_transport(cluster.http_url, alice["api_key"])) as client:
        assert client.protocol_version == "2026-07-28"
        for _ in range(4):
            status = await call(client, "status")
            assert {a["alias"] for a in status["agents"]} == {"alice", "bob"}


async def test_a_wait_cut_off_with_its_instance_is_picked_up_on_the_other(
    cluster: Cluster,
) -> None:
    slug = unique("mcpc")
    alice = await onboard(cluster.http_url, slug, "alice")
    bob = await onboard(cluster.http_url, slug, "bob")
    first, second = cluster.hubs
    async with HubClient(second.ws_url, bob["api_key"]) as b:
        waiting: asyncio.Task[Any] | None = None
        with contextlib.suppress(Exception):
            async with Client(http_transport(first.http_url, alice["api_key"])) as client:
                waiting = asyncio.create_task(
                    client.call_tool("chat_send", {"to": ["bob"], "body": "hello?", "wait": 60})
                )
                await b.next_event("chat.message", timeout=30)
                first.kill()  # the instance holding the wait dies
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(waiting, 30)
        assert waiting is not None and waiting.done()
        await b.call(
            "chat.send",
            session_id=(await b.call("chat.pending"))["pending"][0]["session_id"],
            body="I am here",
        )
        async with Client(http_transport(second.http_url, alice["api_key"])) as client:
            resumed = await call(client, "chat_wait", to=["bob"], wait=30)
        assert resumed["status"] == "replied" and resumed["reply"]["body"] == "I am here"
    await asyncio.to_thread(first.start)
