"""``GET /metrics``: Prometheus text that prometheus-client's own parser
reads, whose counts move while agents work."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.support import REDIS_URL, RunningHub, onboard, running_hub, unique

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(base_url: str) -> Samples:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


async def test_metrics_move_while_agents_work(hub_server: RunningHub, join: Any) -> None:
    agents = [await join(f"m{i}") for i in range(4)]
    clients = [
        await HubClient(hub_server.ws_url, a["api_key"], reconnect=False).connect() for a in agents
    ]
    instance = hub_server.settings.instance_id
    stop = asyncio.Event()

    async def load(client: HubClient, peer: str) -> int:
        sent = 0
        while not stop.is_set() and sent < 2000:
            await client.call("mail.send", to=[peer], subject="load", body="x")
            sent += 1
        return sent

    before = await scrape(hub_server.http_url)
    tasks = [
        asyncio.create_task(load(c, agents[(i + 1) % 4]["alias"])) for i, c in enumerate(clients)
    ]
    try:
        # Scrape while the load runs, until the counts have visibly moved.
        seen: list[float] = []
        async with asyncio.timeout(30):
            while True:
                during = await scrape(hub_server.http_url)
                count = value(
                    during, "beadhub_method_seconds_count", method="mail.send", transport="ws"
                )
                seen.append(count)
                if len(seen) >= 3 and seen[-1] > seen[0] and not any(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        sent = sum(await asyncio.gather(*tasks))
    after = await scrape(hub_server.http_url)

    mail_send = {"method": "mail.send", "transport": "ws"}
    calls = value(after, "beadhub_method_seconds_count", **mail_send)
    assert calls - value(before, "beadhub_method_seconds_count", **mail_send) >= sent
    # The histogram's buckets are cumulative and end with every call.
    inf = value(
        after, "beadhub_method_seconds_bucket", method="mail.send", transport="ws", le="+Inf"
    )
    assert inf == calls
    assert value(after, "beadhub_method_seconds_sum", method="mail.send", transport="ws") > 0
    # Each mail is one committed event, delivered to its recipient's session.
    published = value(after, "beadhub_events_published_total") - value(
        before, "beadhub_events_published_total"
    )
    delivered = value(after, "beadhub_events_delivered_total") - value(
        before, "beadhub_events_delivered_total"
    )
    assert published >= sent
    assert delivered >= sent
    assert value(during, "beadhub_sessions", hub=instance) >= 4
    assert value(during, "beadhub_db_pool_max", hub=instance) == hub_server.settings.pool_max
    assert value(during, "beadhub_db_pool_connections", hub=instance) >= 1
    assert total(after, "beadhub_db_statement_seconds_count") > total(
        before, "beadhub_db_statement_seconds_count"
    )
    for name in (
        "beadhub_session_send_queue_frames",
        "beadhub_group_commit_queued",
        "beadhub_bus_unsent",
    ):
        assert (name, (("hub", instance),)) in after, name

    for client in clients:
        await client.close()
    closed = await scrape(hub_server.http_url)
    assert (
        value(closed, "beadhub_sessions", hub=instance)
        <= value(during, "beadhub_sessions", hub=instance) - 4
    )


async def test_http_routes_and_errors_are_counted(hub_server: RunningHub, agent: Any) -> None:
    alice = await agent("alice")
    before = await scrape(hub_server.http_url)
    for _ in range(3):
        assert (await alice.get("/v1/status")).status_code == 200
    anonymous = httpx.AsyncClient(base_url=hub_server.http_url, timeout=10)
    async with anonymous:
        assert (await anonymous.get("/v1/status")).status_code == 401
    after = await scrape(hub_server.http_url)
    count = "beadhub_method_seconds_count"
    route = {"method": "GET /v1/status", "transport": "http"}
    assert value(after, count, **route) - value(before, count, **route) == 4
    errors = {**route, "code": str(int(ErrorCode.UNAUTHORIZED))}
    name = "beadhub_method_errors_total"
    assert value(after, name, **errors) - value(before, name, **errors) == 1


async def test_refusals_for_too_many_requests_are_counted(
    hub_server: RunningHub, join: Any
) -> None:
    alice, bob = await join("alice"), await join("bob")
    async with (
        HubClient(hub_server.ws_url, alice["api_key"], reconnect=False) as a,
        HubClient(hub_server.ws_url, bob["api_key"], reconnect=False),
    ):
        before = await scrape(hub_server.http_url)
        # Waiting sends stay in flight; past 64 the session refuses.
        calls = [
            asyncio.create_task(a.call("chat.send", to=["bob"], body=f"q{i}", wait=30))
            for i in range(70)
        ]
        pending: set[asyncio.Task[Any]] = set(calls)
        async with asyncio.timeout(20):
            while len(calls) - len(pending) < 6:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        refused = [c for c in calls if c.done() and isinstance(c.exception(), RpcError)]
        assert all(c.exception().code == ErrorCode.RATE_LIMITED for c in refused)  # type: ignore[union-attr]
        after = await scrape(hub_server.http_url)
        name = "beadhub_rate_limited_total"
        assert value(after, name, limit="in_flight") - value(
            before, name, limit="in_flight"
        ) == len(refused)
        for call in calls:
            call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)


async def test_metrics_hold_no_names_or_secrets(hub_server: RunningHub, join: Any) -> None:
    alice = await join("alice-secretive")
    async with HubClient(hub_server.ws_url, alice["api_key"], reconnect=False) as client:
        await client.call("session.whoami")
        async with httpx.AsyncClient(base_url=hub_server.http_url, timeout=10) as http:
            text = (await http.get("/metrics")).text
    for secret in (alice["api_key"], alice["alias"], alice["project_slug"], alice["project_id"]):
        assert secret not in text


async def test_metrics_can_be_turned_off(database_url: str) -> None:
    async with (
        running_hub(database_url=database_url, metrics_enabled=False) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        response = await http.get("/metrics")
    assert response.status_code == 404
    assert response.json()["code"] == ErrorCode.NOT_FOUND


async def test_a_key_over_its_rate_is_counted(database_url: str) -> None:
    async with running_hub(database_url=database_url, rate_key_per_minute=3) as server:
        alice = await onboard(server.http_url, unique("rate"), "alice")
        before = await scrape(server.http_url)
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
            headers = {"Authorization": f"Bearer {alice['api_key']}"}
            answers = [
                (await http.get("/v1/status", headers=headers)).status_code for _ in range(5)
            ]
        after = await scrape(server.http_url)
    assert answers.count(429) == 2
    name = "beadhub_rate_limited_total"
    assert value(after, name, limit="key") - value(before, name, limit="key") == 2


async def test_bus_lag_is_measured_across_instances(
    database_url: str, bus_prefix: str, redis_hub_server: RunningHub
) -> None:
    async with running_hub(
        database_url=database_url, bus_url=REDIS_URL, bus_prefix=bus_prefix
    ) as other:
        slug = unique("lag")
        alice = await onboard(redis_hub_server.http_url, slug, "alice")
        bob = await onboard(other.http_url, slug, "bob")
        before = await scrape(other.http_url)
        async with (
            HubClient(redis_hub_server.ws_url, alice["api_key"], reconnect=False) as a,
            HubClient(other.ws_url, bob["api_key"], reconnect=False) as b,
        ):
            for n in range(3):
                await a.call("mail.send", to=["bob"], subject=f"m{n}", body="x")
                await b.next_event("mail")
        after = await scrape(other.http_url)
    name = "beadhub_bus_lag_seconds_count"
    # Each mail came to bob's instance over Redis, its age measured.
    assert value(after, name) - value(before, name) >= 3
    assert value(after, "beadhub_bus_lag_seconds_sum") >= value(
        before, "beadhub_bus_lag_seconds_sum"
    )
