"""Two hub processes behind nginx, sharing PostgreSQL and Redis: what one
instance publishes reaches the project's sessions on every instance, and
presence is the union of both instances' sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from protocol.client import HubClient
from tests.e2e.cluster import Cluster, running_cluster
from tests.support import onboard, unique

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    async with running_cluster() as running:
        yield running


@pytest.fixture
async def clients() -> AsyncIterator[list[HubClient]]:
    opened: list[HubClient] = []
    yield opened
    for client in opened:
        await client.close()


def presence_of(alias: str, online: bool) -> Any:
    return lambda e: e["data"]["alias"] == alias and e["data"]["online"] is online


async def online_map(client: HubClient) -> dict[str, bool]:
    return {a["alias"]: a["online"] for a in (await client.call("presence.list"))["agents"]}


async def open_client(
    clients: list[HubClient], url: str, agent: dict[str, Any], **kw: Any
) -> HubClient:
    client = await HubClient(url, agent["api_key"], **kw).connect()
    clients.append(client)
    return client


async def test_the_balancer_spreads_http_and_websockets_over_both_instances(cluster, clients):
    assert await cluster.instance_ids_behind_balancer() == {
        cluster.instance_id(0),
        cluster.instance_id(1),
    }
    slug = unique("proj")
    alice = await onboard(cluster.http_url, slug, "alice")
    holders = set()
    for _ in range(4):
        client = await open_client(clients, cluster.ws_url, alice)
        session_id = (await client.call("session.whoami"))["session_id"]
        holders.add(await cluster.instance_holding(session_id))
    assert holders == {0, 1}


async def test_events_published_on_one_instance_reach_every_instance(cluster, clients):
    slug = unique("proj")
    alice = await onboard(cluster.http_url, slug, "alice")
    bob = await onboard(cluster.http_url, slug, "bob")
    carol = await onboard(cluster.http_url, slug, "carol")
    a = await open_client(clients, cluster.hubs[0].ws_url, alice)
    b = await open_client(clients, cluster.hubs[1].ws_url, bob)
    c = await open_client(clients, cluster.ws_url, carol)

    await a.call("presence.update", focus="from instance 1")
    for client in (b, c):
        event = await client.next_event(
            "presence", where=lambda e: e["data"]["focus"] == "from instance 1", timeout=5
        )
        assert event["data"]["alias"] == "alice"

    await b.call("presence.update", focus="from instance 2")
    for client in (a, c):
        await client.next_event(
            "presence", where=lambda e: e["data"]["focus"] == "from instance 2", timeout=5
        )


async def test_addressed_events_cross_instances_only_to_their_recipients(cluster, clients):
    slug = unique("proj")
    alice = await onboard(cluster.http_url, slug, "alice")
    bob = await onboard(cluster.http_url, slug, "bob")
    carol = await onboard(cluster.http_url, slug, "carol")
    a = await open_client(clients, cluster.hubs[0].ws_url, alice)
    b = await open_client(clients, cluster.hubs[1].ws_url, bob)
    c = await open_client(clients, cluster.hubs[1].ws_url, carol)

    sent = await a.call("mail.send", to=["bob"], subject="hello", body="across instances")
    event = await b.next_event("mail", timeout=5)
    assert event["data"]["message_id"] == sent["message_id"]
    assert event["data"]["from_alias"] == "alice"
    # carol shares bob's instance and project but is not a recipient; a
    # later event addressed to her proves her stream is flowing.
    await a.call("mail.send", to=["carol"], subject="second", body="for carol")
    first_mail = await c.next_event("mail", timeout=5)
    assert first_mail["data"]["subject"] == "second"


async def test_agent_is_online_while_any_instance_holds_a_session(cluster, clients):
    slug = unique("proj")
    alice = await onboard(cluster.http_url, slug, "alice")
    bob = await onboard(cluster.http_url, slug, "bob")
    watcher = await open_client(clients, cluster.hubs[0].ws_url, alice)
    on_one = await HubClient(cluster.hubs[0].ws_url, bob["api_key"], reconnect=False).connect()
    on_two = await HubClient(cluster.hubs[1].ws_url, bob["api_key"], reconnect=False).connect()
    clients.extend([on_one, on_two])
    await watcher.next_event("presence", where=presence_of("bob", True), timeout=5)

    for hub in cluster.hubs:
        async with HubClient(hub.ws_url, alice["api_key"]) as viewer:
            listed = {
                x["alias"]: x["online"] for x in (await viewer.call("presence.list"))["agents"]
            }
            assert listed["bob"] is True

    await on_one.close()
    # bob still holds a session on instance 2: instance 1 must not declare
    # him offline, and both instances still list him online.
    async with HubClient(cluster.hubs[1].ws_url, alice["api_key"]) as viewer:
        listed = {x["alias"]: x["online"] for x in (await viewer.call("presence.list"))["agents"]}
        assert listed["bob"] is True
    assert [
        e
        for e in watcher.pending_events()
        if e["type"] == "presence" and e["data"]["alias"] == "bob"
    ] == []

    await on_two.close()
    await watcher.next_event("presence", where=presence_of("bob", False), timeout=5)
    assert (await online_map(watcher))["bob"] is False


async def test_chat_wait_on_one_instance_is_answered_from_the_other(cluster, clients):
    slug = unique("proj")
    alice = await onboard(cluster.http_url, slug, "alice")
    bob = await onboard(cluster.http_url, slug, "bob")
    a = await open_client(clients, cluster.hubs[0].ws_url, alice)
    b = await open_client(clients, cluster.hubs[1].ws_url, bob)
    await a.next_event("presence", where=presence_of("bob", True), timeout=5)

    waiting = asyncio.create_task(a.call("chat.send", to=["bob"], body="ready to merge?", wait=20))
    question = await b.next_event("chat.message", timeout=5)
    assert question["data"]["body"] == "ready to merge?"
    await b.call("chat.send", session_id=question["data"]["session_id"], body="yes, go")
    async with asyncio.timeout(10):
        answer = await waiting
    assert answer["status"] == "replied"
    assert answer["reply"]["from_alias"] == "bob"
    assert answer["reply"]["body"] == "yes, go"
