"""One suite for every bus backend: the memory bus and the Redis bus must
behave the same behind the Bus interface."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from hub.bus import Bus, create_bus
from tests.support import REDIS_URL


class Inbox:
    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def __call__(self, channel: str, data: bytes) -> None:
        self.messages.put_nowait((channel, data))

    async def next(self) -> tuple[str, bytes]:
        async with asyncio.timeout(5):
            return await self.messages.get()


async def _no_offline(project_id: str, agent_ids: list[str]) -> None:
    return None


@pytest.fixture(params=["memory://", REDIS_URL])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Bus, Inbox]]:
    bus = create_bus(
        request.param, prefix="bustest-" + uuid.uuid4().hex[:8], instance_id=uuid.uuid4().hex[:8]
    )
    inbox = Inbox()
    bus.set_handlers(inbox, _no_offline)
    await bus.connect()
    yield bus, inbox
    await bus.disconnect()


async def test_a_subscriber_gets_what_is_published_on_its_channels_only(bus):
    bus, inbox = bus
    await bus.subscribe("project:a")
    await bus.publish("project:b", b"not for us")
    await bus.publish("project:a", b"one")
    await bus.publish("project:a", b"two")
    assert await inbox.next() == ("project:a", b"one")
    assert await inbox.next() == ("project:a", b"two")
    await bus.unsubscribe("project:a")
    await bus.subscribe("project:c")
    await bus.publish("project:a", b"after unsubscribe")
    await bus.publish("project:c", b"marker")
    assert await inbox.next() == ("project:c", b"marker")


async def test_presence_counts_sessions_per_agent(bus):
    bus, _ = bus
    assert await bus.presence_join("p1", "alice", "s1") is True
    assert await bus.presence_join("p1", "alice", "s2") is False
    assert await bus.presence_join("p1", "bob", "s3") is True
    assert await bus.presence_join("p2", "mallory", "s4") is True
    assert await bus.online_agents("p1") == {"alice", "bob"}
    assert await bus.presence_leave("p1", "alice", "s1") is False
    assert await bus.online_agents("p1") == {"alice", "bob"}
    assert await bus.presence_leave("p1", "alice", "s2") is True
    assert await bus.presence_leave("p1", "alice", "s2") is False  # already gone
    assert await bus.online_agents("p1") == {"bob"}
    assert await bus.online_agents("p2") == {"mallory"}
    assert await bus.ping() is True


async def test_redis_presence_spans_instances():
    prefix = "bustest-" + uuid.uuid4().hex[:8]
    a = create_bus(REDIS_URL, prefix=prefix, instance_id="a-" + uuid.uuid4().hex[:6])
    b = create_bus(REDIS_URL, prefix=prefix, instance_id="b-" + uuid.uuid4().hex[:6])
    for one in (a, b):
        one.set_handlers(Inbox(), _no_offline)
        await one.connect()
    try:
        assert await a.presence_join("p", "alice", "on-a") is True
        assert await b.presence_join("p", "alice", "on-b") is False
        assert await a.presence_leave("p", "alice", "on-a") is False
        assert await a.online_agents("p") == {"alice"}
        assert await b.presence_leave("p", "alice", "on-b") is True
        assert await a.online_agents("p") == set()
    finally:
        await a.disconnect()
        await b.disconnect()
