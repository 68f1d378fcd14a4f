"""Nothing stays stuck, on two hub processes sharing PostgreSQL and Redis:
a SIGKILLed agent's claim and reservations are released after the grace
(announced on the other instance), waiters are granted in arrival order
across instances with never two holders at once, and a retried write with
the same idempotency key changes nothing on either instance."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.e2e.cluster import Cluster, running_cluster
from tests.support import ROOT, onboard, unique
from tests.test_beads import issue, jsonl

pytestmark = pytest.mark.timeout(600)

GRACES = {"BEADHUB_CLAIM_HOLDER_GRACE": "2", "BEADHUB_RESERVATION_HOLDER_GRACE": "1"}
#: Contended acquires of one path by agents on both instances.
ATTEMPTS = 2000
CONTENDERS = 4

#: An agent process that claims, reserves, says so and then just lives.
AGENT = """
import asyncio, sys
from protocol.client import HubClient

async def main(url, key):
    client = await HubClient(url, key).connect()
    await client.call("claims.claim", bead_id="bd-crash")
    await client.call("reservations.acquire", paths=["src/crash.py"], ttl_seconds=3600)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    async with running_cluster(env=GRACES) as running:
        yield running


@pytest.fixture
async def clients() -> AsyncIterator[list[HubClient]]:
    opened: list[HubClient] = []
    yield opened
    for client in opened:
        await client.close()


async def open_client(clients: list[HubClient], url: str, agent: dict[str, Any]) -> HubClient:
    client = await HubClient(url, agent["api_key"]).connect()
    clients.append(client)
    return client


async def test_a_sigkilled_agent_loses_its_claim_and_reservations_after_the_grace(cluster, clients):
    slug = unique("proj")
    crasher = await onboard(cluster.http_url, slug, "crasher")
    watcher = await onboard(cluster.http_url, slug, "watcher")
    w = await open_client(clients, cluster.hubs[1].ws_url, watcher)
    await w.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-crash")))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        AGENT,
        cluster.hubs[0].ws_url,
        crasher["api_key"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    # Gone: stale first, then released with the reason, seen on the other instance.
    await w.next_event("presence", where=lambda e: e["data"]["alias"] == "crasher", timeout=15)
    claims = (await w.call("claims.list"))["claims"]
    assert claims[0]["stale"] is True
    released = await w.next_event("reservation.released", timeout=15)
    assert released["data"]["path"] == "src/crash.py"
    assert released["data"]["release_reason"] == "holder_gone"
    freed = await w.next_event("claim.released", timeout=15)
    assert freed["data"]["bead_id"] == "bd-crash" and freed["data"]["reason"] == "holder_gone"
    assert [i["bead_id"] for i in (await w.call("beads.ready"))["issues"]] == ["bd-crash"]


async def test_waiters_on_both_instances_are_granted_in_arrival_order(cluster, clients):
    slug = unique("proj")
    holder = await onboard(cluster.http_url, slug, "holder")
    h = await open_client(clients, cluster.hubs[0].ws_url, holder)
    await h.call("reservations.acquire", paths=["hot.py"])
    waiters = []
    calls = {}
    for n in range(6):
        agent = await onboard(cluster.http_url, slug, f"w{n}")
        client = await open_client(clients, cluster.hubs[n % 2].ws_url, agent)
        task = asyncio.create_task(client.call("reservations.acquire", paths=["hot.py"], wait=60))
        calls[task] = (agent["alias"], client)
        await h.next_event(
            "reservation.queued", where=lambda e, a=agent["alias"]: e["data"]["alias"] == a
        )
        waiters.append(agent["alias"])
    await h.call("reservations.release", paths=["hot.py"])
    order = []
    pending = set(calls)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1
        task = done.pop()
        alias, client = calls[task]
        assert task.result()["status"] == "granted"
        order.append(alias)
        await client.call("reservations.release", paths=["hot.py"])
    assert order == waiters


async def test_two_thousand_contended_waits_never_grant_twice(cluster, clients):
    slug = unique("proj")
    agents = [await onboard(cluster.http_url, slug, f"c{n}") for n in range(CONTENDERS)]
    contenders = [
        await open_client(clients, cluster.hubs[n % 2].ws_url, a) for n, a in enumerate(agents)
    ]
    holder: list[str | None] = [None]
    grants: list[tuple[str, int]] = []
    violations: list[str] = []
    per_agent = ATTEMPTS // CONTENDERS

    async def contend(alias: str, client: HubClient) -> None:
        for _ in range(per_agent):
            result = await client.call("reservations.acquire", paths=["contended.py"], wait=120)
            assert result["status"] == "granted", result
            if holder[0] is not None:
                violations.append(f"{alias} granted while {holder[0]} held it")
            holder[0] = alias
            grants.append((alias, result["granted"][0]["token"]))
            holder[0] = None  # cleared before the release is even sent
            released = await client.call("reservations.release", paths=["contended.py"])
            assert released["released"] == ["contended.py"]

    await asyncio.gather(*(contend(a["alias"], c) for a, c in zip(agents, contenders, strict=True)))
    assert violations == []
    assert len(grants) == ATTEMPTS
    tokens = [token for _, token in grants]
    assert tokens == sorted(tokens) and len(set(tokens)) == ATTEMPTS
    assert {alias for alias, _ in grants} == {a["alias"] for a in agents}
    assert (await contenders[0].call("queue.list"))["waiting"] == []


async def test_a_retried_write_changes_nothing_on_either_instance(cluster, clients):
    slug = unique("proj")
    alice = await onboard(cluster.http_url, slug, "alice")
    bob = await onboard(cluster.http_url, slug, "bob")
    on_one = await open_client(clients, cluster.hubs[0].ws_url, alice)
    on_two = await open_client(clients, cluster.hubs[1].ws_url, alice)
    b = await open_client(clients, cluster.hubs[1].ws_url, bob)

    first = await on_one.call("mail.send", to=["bob"], body="once", idempotency_key="mail-1")
    assert (
        await on_two.call("mail.send", to=["bob"], body="once", idempotency_key="mail-1") == first
    )
    racing = await asyncio.gather(
        on_one.call("mail.send", to=["bob"], body="race", idempotency_key="mail-2"),
        on_two.call("mail.send", to=["bob"], body="race", idempotency_key="mail-2"),
    )
    assert racing[0] == racing[1]
    headers = {"Authorization": f"Bearer {alice['api_key']}", "Idempotency-Key": "http-1"}
    body = {"to_alias": "bob", "body": "over http"}
    answers = []
    for hub in cluster.hubs:
        async with httpx.AsyncClient(base_url=hub.http_url, headers=headers) as http:
            answers.append((await http.post("/v1/messages", json=body)).json())
    assert answers[0] == answers[1]
    inbox = (await b.call("mail.inbox"))["messages"]
    assert sorted(m["body"] for m in inbox) == ["once", "over http", "race"]

    await on_one.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-x")))
    claim = await on_one.call("claims.claim", bead_id="bd-x", idempotency_key="claim-1")
    await on_one.call("claims.release", bead_id="bd-x")
    assert await on_two.call("claims.claim", bead_id="bd-x", idempotency_key="claim-1") == claim
    assert (await b.call("claims.list"))["claims"] == []  # not claimed a second time


async def test_a_retried_escalation_or_ack_changes_nothing_on_either_instance(cluster, clients):
    slug = unique("proj")
    alice = await onboard(cluster.http_url, slug, "alice")
    bob = await onboard(cluster.http_url, slug, "bob")
    on_one = await open_client(clients, cluster.hubs[0].ws_url, alice)
    on_two = await open_client(clients, cluster.hubs[1].ws_url, alice)
    b = await open_client(clients, cluster.hubs[1].ws_url, bob)

    asked = {"subject": "Which API?", "situation": "v1 or v2?"}
    first = await on_one.call("escalations.create", **asked, idempotency_key="esc-1")
    assert await on_two.call("escalations.create", **asked, idempotency_key="esc-1") == first
    racing = await asyncio.gather(
        on_one.call("escalations.create", subject="Race", situation="-", idempotency_key="esc-2"),
        on_two.call("escalations.create", subject="Race", situation="-", idempotency_key="esc-2"),
    )
    assert racing[0] == racing[1]
    with pytest.raises(RpcError) as info:
        await on_two.call(
            "escalations.create", subject="Else", situation="-", idempotency_key="esc-1"
        )
    assert info.value.code == ErrorCode.INVALID_PARAMS
    mine = await on_one.call("escalations.list", mine=True)
    assert sorted(e["subject"] for e in mine["escalations"]) == ["Race", "Which API?"]

    one = await on_one.call("mail.send", to=["bob"], body="one")
    two = await on_one.call("mail.send", to=["bob"], body="two")
    b_one = await open_client(clients, cluster.hubs[0].ws_url, bob)
    acked = await b.call("mail.ack", message_ids=[one["message_id"]], idempotency_key="ack-1")
    again = await b_one.call("mail.ack", message_ids=[one["message_id"]], idempotency_key="ack-1")
    assert again == acked
    with pytest.raises(RpcError) as info:
        await b_one.call("mail.ack", message_ids=[two["message_id"]], idempotency_key="ack-1")
    assert info.value.code == ErrorCode.INVALID_PARAMS
    unread = await b.call("mail.inbox", unread_only=True)
    assert [m["message_id"] for m in unread["messages"]] == [two["message_id"]]
    # One receipt for `one` reached alice on either instance, then the marker's.
    await b.call("mail.ack", message_ids=[two["message_id"]])
    for client in (on_one, on_two):
        receipts = [await client.next_event("mail.read", timeout=10) for _ in range(2)]
        assert [[m["message_id"] for m in r["data"]["messages"]] for r in receipts] == [
            [one["message_id"]],
            [two["message_id"]],
        ]
