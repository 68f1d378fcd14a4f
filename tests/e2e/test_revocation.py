"""Revocation across instances, and logs free of secrets: two ``beadhub
serve`` processes on one PostgreSQL and one Redis behind nginx. A key
revoked, an agent deleted or a ticket signed out through one instance
closes the sessions the other instance holds within 2 seconds, and that
instance refuses the credential at once (its auth cache is told)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from protocol.client import HubClient
from tests.e2e.cluster import Cluster, running_cluster
from tests.support import onboard, unique

pytestmark = pytest.mark.timeout(120)

CLOSED_WITHIN = 2.0


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    async with running_cluster() as running:
        yield running


async def sign_in(cluster: Cluster, slug: str, via: int = 0) -> str:
    async with httpx.AsyncClient(base_url=cluster.hubs[via].http_url, timeout=10) as http:
        answer = await http.post(
            "/v1/auth/signin",
            json={"token": cluster.operator_token(via), "project_slug": slug, "human_name": "ops"},
        )
    answer.raise_for_status()
    return str(answer.json()["ticket"])


async def test_revocation_through_one_instance_closes_sessions_on_the_other(cluster: Cluster):
    slug = unique("proj")
    alice = await onboard(cluster.http_url, slug, "alice")
    bob = await onboard(cluster.http_url, slug, "bob")
    one, two = cluster.hubs
    alice_session = await HubClient(two.ws_url, alice["api_key"], reconnect=False).connect()
    bob_session = await HubClient(two.ws_url, bob["api_key"], reconnect=False).connect()
    human_ticket = await sign_in(cluster, slug, via=1)
    dashboard = await HubClient(two.ws_url, ticket=human_ticket, reconnect=False).connect()
    as_alice = {"Authorization": f"Bearer {alice['api_key']}"}
    try:
        async with httpx.AsyncClient(base_url=two.http_url, timeout=10) as on_two:
            # Instance two now holds alice's key in its auth cache.
            assert (await on_two.get("/v1/status", headers=as_alice)).status_code == 200

            ticket = await sign_in(cluster, slug, via=0)
            as_human = {"Authorization": f"Bearer {ticket}"}
            async with httpx.AsyncClient(base_url=one.http_url, timeout=10) as on_one:
                keys = (await on_one.get("/v1/keys", headers=as_human)).json()["keys"]
                key_id = next(k["key_id"] for k in keys if k["alias"] == "alice")
                revoked = await on_one.post(f"/v1/keys/{key_id}/revoke", headers=as_human)
                assert revoked.status_code == 200
                await asyncio.wait_for(alice_session.ended(), CLOSED_WITHIN)
                assert alice_session.revoked
                assert (await on_two.get("/v1/status", headers=as_alice)).status_code == 401

                deleted = await on_one.delete(f"/v1/workspaces/{bob['agent_id']}", headers=as_human)
                assert deleted.status_code == 200
                await asyncio.wait_for(bob_session.ended(), CLOSED_WITHIN)

                out = await on_one.post("/v1/auth/ticket/revoke", json={"ticket": human_ticket})
                assert out.json()["revoked"] is True
                await asyncio.wait_for(dashboard.ended(), CLOSED_WITHIN)
                assert dashboard.revoked
    finally:
        for client in (alice_session, bob_session, dashboard):
            await client.close()


#: What a hub credential looks like (agent keys, tickets, operator tokens,
#: sign-in links, invitations).
SECRET = re.compile(r"\b(?:aw_sk_|bh_|bht_|bho_|bhl_|bhi_)[A-Za-z0-9_\-]{16,}")


async def test_the_logs_hold_no_secret(cluster: Cluster):
    slug = unique("proj")
    alice = await onboard(cluster.http_url, slug, "alice")
    ticket = await sign_in(cluster, slug)
    one = cluster.hubs[0]
    async with httpx.AsyncClient(base_url=one.http_url, timeout=10) as http:
        link = await http.post(
            "/v1/auth/links",
            json={"human_name": "Bea", "project_slug": slug},
            headers={"Authorization": f"Bearer {cluster.operator_token(0)}"},
        )
        # A client that puts secrets where they do not belong.
        await http.get(f"/v1/status?api_key={alice['api_key']}")
        await http.get("/v1/status", headers={"Authorization": f"Bearer {alice['api_key']}x"})
    with pytest.raises(InvalidStatus):
        async with ws_connect(f"{one.ws_url}/v1/ws?ticket={ticket}"):
            pass
    async with ws_connect(
        f"{one.ws_url}/v1/ws",
        subprotocols=["beadhub", f"beadhub.ticket.{ticket}"],  # type: ignore[list-item]
    ) as socket:
        await socket.send('{"jsonrpc": "2.0", "id": 1, "method": "session.whoami"}')
        await socket.recv()
    async with HubClient(one.ws_url, alice["api_key"]) as client:
        await client.call("session.whoami")
    logs = cluster.logs()
    assert "GET /v1/status" in logs  # the access log is on, and was read
    secrets = [alice["api_key"], ticket, cluster.operator_token(0), link.json()["token"]]
    assert [s for s in secrets if s in logs] == []
    assert SECRET.findall(logs) == []
