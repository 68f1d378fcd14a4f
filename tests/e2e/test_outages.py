"""Redis restarts and PostgreSQL outages, on private servers of the tests'
own (the shared ones on 5432/6379 are never touched)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.bus.redis import RedisBus
from hub.bus.relay import Relay
from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.e2e.cluster import Cluster, PrivatePostgres, PrivateRedis, running_cluster
from tests.support import onboard, unique

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="beadhub-outage-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(workdir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_postgres(workdir: Path) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(workdir)
    try:
        yield server.init()
    finally:
        server.stop("immediate")


async def online_map(client: HubClient) -> dict[str, bool]:
    agents = (await client.call("presence.list"))["agents"]
    return {a["alias"]: a["online"] for a in agents}


async def ready_status(cluster: Cluster, index: int) -> tuple[int, dict[str, str]]:
    async with httpx.AsyncClient(base_url=cluster.hubs[index].http_url, timeout=5) as client:
        response = await client.get("/ready")
    return response.status_code, response.json()


async def test_hub_rides_out_a_redis_restart(private_redis: PrivateRedis):
    async with running_cluster(redis_url=private_redis.url) as cluster:
        slug = unique("proj")
        alice = await onboard(cluster.http_url, slug, "alice")
        bob = await onboard(cluster.http_url, slug, "bob")
        carol = await onboard(cluster.http_url, slug, "carol")
        # alice and carol on instance 1, bob on instance 2: bob's mail to
        # alice crosses Redis, carol's does not.
        async with (
            HubClient(cluster.hubs[0].ws_url, alice["api_key"]) as a,
            HubClient(cluster.hubs[1].ws_url, bob["api_key"]) as b,
            HubClient(cluster.hubs[0].ws_url, carol["api_key"]) as c,
        ):
            before = await b.call("mail.send", to=["alice"], body="before")
            event = await a.next_event("mail", timeout=5)
            assert event["data"]["message_id"] == before["message_id"]

            private_redis.stop()
            # Mail sent while Redis is down is stored and acknowledged.
            during = await b.call("mail.send", to=["alice"], body="during")
            # Let the outage last past the store's late-commit window, then
            # have newer events reach alice locally: her stream's cursor is
            # now past bob's message, which she never got.
            await asyncio.sleep(2.5)
            local = await c.call("mail.send", to=["alice"], body="local")
            event = await a.next_event("mail", timeout=5)
            assert event["data"]["message_id"] == local["message_id"]
            status, body = await ready_status(cluster, 0)
            assert (status, body["bus"]) == (503, "unavailable")

            private_redis.start()
            # Without reconnecting, alice gets what the bus lost.
            event = await a.next_event("mail", timeout=15)
            assert event["data"]["message_id"] == during["message_id"]
            assert a.connections == 1

            # The hubs resubscribed by themselves: live traffic crosses again.
            after = await b.call("mail.send", to=["alice"], body="after")
            event = await a.next_event("mail", timeout=5)
            assert event["data"]["message_id"] == after["message_id"]
            await a.call("mail.send", to=["bob"], body="and back")
            event = await b.next_event("mail", timeout=5)
            assert event["data"]["body"] == "and back"

            # Redis came back empty; the instances wrote their sessions back.
            async with asyncio.timeout(10):
                everyone_online = False
                while not everyone_online:
                    await asyncio.sleep(0.2)
                    everyone_online = all((await online_map(b)).values())
            assert await online_map(a) == {"alice": True, "bob": True, "carol": True}
            for index in (0, 1):
                assert (await ready_status(cluster, index))[0] == 200


async def test_database_outage_is_reported_and_recovered(private_postgres: PrivatePostgres):
    async with running_cluster(database_url=private_postgres.url) as cluster:
        slug = unique("proj")
        alice = await onboard(cluster.http_url, slug, "alice")
        bob = await onboard(cluster.http_url, slug, "bob")
        carol = await onboard(cluster.http_url, slug, "carol")
        async with (
            HubClient(cluster.ws_url, alice["api_key"]) as a,
            HubClient(cluster.ws_url, bob["api_key"]) as b,
        ):
            await a.call("mail.send", to=["bob"], body="before")
            await b.next_event("mail", timeout=5)

            private_postgres.stop("fast")
            for _ in range(3):
                with pytest.raises(RpcError) as raised:
                    await a.call("mail.send", to=["bob"], body="during")
                assert raised.value.code == ErrorCode.UNAVAILABLE
            async with httpx.AsyncClient(base_url=cluster.http_url, timeout=5) as http:
                response = await http.get("/ready")
                assert response.status_code == 503
                assert response.json()["database"] == "unavailable"
                response = await http.post("/v1/init", json={"project_slug": slug, "alias": "dave"})
                assert response.status_code == 503
                assert response.json()["code"] == ErrorCode.UNAVAILABLE
            # A session with a key the hub has not seen yet cannot be
            # authenticated, and the refusal says why.
            with pytest.raises(RpcError) as raised:
                await HubClient(cluster.ws_url, carol["api_key"], reconnect=False).connect()
            assert raised.value.code == ErrorCode.UNAVAILABLE

            await asyncio.to_thread(private_postgres.start)
            # Every instance answers again at once, on every pooled
            # connection: no stale connection fails a caller.
            for index in (0, 1):
                assert (await ready_status(cluster, index))[0] == 200
            for n in range(5):
                await a.call("mail.send", to=["bob"], body=f"after {n}")
                event = await b.next_event("mail", timeout=5)
                assert event["data"]["body"] == f"after {n}"
            # The sessions stayed open throughout.
            assert (a.connections, b.connections) == (1, 1)


async def test_clients_resume_through_the_balancer_after_both_instances_restart(
    private_redis: PrivateRedis,
) -> None:
    """Everything restarts (a deploy): clients come back by themselves and
    get what was sent while they were away."""
    async with running_cluster(redis_url=private_redis.url) as cluster:
        slug = unique("proj")
        alice = await onboard(cluster.http_url, slug, "alice")
        bob = await onboard(cluster.http_url, slug, "bob")
        async with (
            HubClient(cluster.ws_url, alice["api_key"], max_backoff=0.5) as a,
            HubClient(cluster.ws_url, bob["api_key"], max_backoff=0.5) as b,
        ):
            await b.call("mail.send", to=["alice"], body="first")
            await a.next_event("mail", timeout=5)
            cluster.kill(0)
            cluster.kill(1)
            await asyncio.gather(cluster.restart(0), cluster.restart(1))
            await b.wait_connected(timeout=15)
            sent = await b.call("mail.send", to=["alice"], body="second")
            event = await a.next_event("mail", timeout=15)
            assert event["data"]["message_id"] == sent["message_id"]
            assert a.connections >= 2


async def test_bus_resends_what_it_could_not_publish_and_reports_the_gap(
    private_redis: PrivateRedis,
) -> None:
    """The relay and Redis bus on their own: a publish that failed while
    Redis was down is sent once it is back, and listeners hear about the
    gap (how far back to re-read the store)."""
    prefix = unique("bus")
    buses = [
        RedisBus(
            private_redis.url,
            prefix=prefix,
            instance_id=name,
            heartbeat_seconds=0.5,
            instance_ttl=2,
        )
        for name in ("a", "b")
    ]
    relays = [Relay(bus) for bus in buses]

    async def on_offline(project_id: str, agent_ids: list[str]) -> None:
        return None

    received: list[dict[str, Any]] = []
    gaps: list[float] = []
    got_gap = asyncio.Event()
    got_message = asyncio.Event()

    def listener(message: dict[str, Any]) -> None:
        received.append(message)
        got_message.set()

    def on_gap(seconds: float) -> None:
        gaps.append(seconds)
        got_gap.set()

    for bus, relay in zip(buses, relays, strict=True):
        bus.set_handlers(relay.on_bus_message, on_offline)
        await bus.connect()
    try:
        await relays[1].add("project:x", listener, on_gap=on_gap)
        await relays[0].publish("project:x", {"n": 0})
        async with asyncio.timeout(5):
            await got_message.wait()

        private_redis.stop()
        await relays[0].publish("project:x", {"n": 1})  # fails, kept
        await asyncio.sleep(1)
        private_redis.start()
        async with asyncio.timeout(10):
            await got_gap.wait()
        assert gaps[0] >= 1  # covers at least the outage
        await relays[0].publish("project:x", {"n": 2})
        async with asyncio.timeout(5):
            while sorted(m["n"] for m in received) != [0, 1, 2]:
                got_message.clear()
                await got_message.wait()
    finally:
        for bus in buses:
            await bus.disconnect()


@pytest.mark.parametrize("wait", [0, 1])
async def test_chat_send_during_a_redis_outage_succeeds_or_stores_nothing(
    private_redis: PrivateRedis, wait: int
):
    """Each call either answers success (and the message is stored, and
    reaches the other instance's session once Redis is back) or fails
    before storing: a client that retries a failure never sends twice."""
    async with running_cluster(redis_url=private_redis.url) as cluster:
        slug = unique("proj")
        alice = await onboard(cluster.http_url, slug, "alice")
        bob = await onboard(cluster.http_url, slug, "bob")
        async with (
            HubClient(cluster.hubs[0].ws_url, alice["api_key"]) as a,
            HubClient(cluster.hubs[1].ws_url, bob["api_key"]) as b,
        ):
            await a.call("chat.send", to=["bob"], body="before")
            await b.next_event("chat.message", timeout=5)
            private_redis.stop()
            succeeded, failed = [], []
            for n in range(6):
                body = f"during-{n}"
                try:
                    call = a.call("chat.send", to=["bob"], body=body, wait=wait)
                    await asyncio.wait_for(call, 30)
                    succeeded.append(body)
                except RpcError as exc:
                    assert exc.code != ErrorCode.INTERNAL_ERROR, exc
                    failed.append(body)
            # bdh's routes, through nginx to either instance.
            sid = (await a.call("chat.sessions"))["sessions"][0]["session_id"]
            headers = {"Authorization": f"Bearer {alice['api_key']}"}
            async with httpx.AsyncClient(
                base_url=cluster.http_url, headers=headers, timeout=30
            ) as http:
                for n in range(6, 10):
                    body = f"during-{n}"
                    answer = await http.post(
                        f"/v1/chat/sessions/{sid}/messages", json={"body": body}
                    )
                    assert answer.status_code != 500, answer.text
                    (succeeded if answer.status_code == 200 else failed).append(body)
            private_redis.start()
            sessions = (await a.call("chat.sessions"))["sessions"]
            history = await a.call("chat.history", session_id=sessions[0]["session_id"], limit=100)
            stored = [m["body"] for m in history["messages"] if m["body"].startswith("during-")]
            assert stored == succeeded, (stored, succeeded, failed)
            assert succeeded or failed
            # bob, on the other instance, gets every stored message
            # (re-sent by the relay, or caught up after the gap).
            seen: set[str] = set()
            async with asyncio.timeout(30):
                while not set(succeeded) <= seen:
                    event = await b.next_event("chat.message", timeout=30)
                    seen.add(event["data"]["body"])
