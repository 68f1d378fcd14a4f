"""Event subscriptions: a session receives only the event types it asked
for, live and on resume; addressing still applies; bad topics are refused."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.support import onboard

pytestmark = pytest.mark.asyncio


async def _team(hub_server, slug: str, size: int = 2) -> list[dict]:
    return [await onboard(hub_server.http_url, slug, f"agent{i}") for i in range(size)]


async def _events_until(client: HubClient, marker: str) -> list[str]:
    """Event types received up to (and with) the mail whose subject is ``marker``."""
    seen = []
    async with asyncio.timeout(5):
        while True:
            event = await client.next_event()
            seen.append(event["type"])
            if event["type"] == "mail" and event["data"]["subject"] == marker:
                return seen


async def test_a_subscribed_session_gets_only_its_types(hub_server, slug):
    alice, bob = await _team(hub_server, slug)
    async with (
        HubClient(hub_server.ws_url, alice["api_key"]) as a,
        HubClient(hub_server.ws_url, bob["api_key"], events=["mail"]) as narrow,
        HubClient(hub_server.ws_url, bob["api_key"]) as full,
    ):
        await a.call("reservations.acquire", paths=["src/a.py"])
        await a.call("reservations.release", paths=["src/a.py"])
        await a.call("mail.send", to=[bob["alias"]], subject="end", body="x")
        assert await _events_until(narrow, "end") == ["mail"]
        everything = await _events_until(full, "end")
        assert "reservation.granted" in everything and "reservation.released" in everything


async def test_subscribe_changes_the_feed_while_connected(hub_server, slug):
    alice, bob = await _team(hub_server, slug)
    async with (
        HubClient(hub_server.ws_url, alice["api_key"]) as a,
        HubClient(hub_server.ws_url, bob["api_key"]) as b,
    ):
        assert await b.subscribe(["reservation.granted", "mail"]) == [
            "reservation.granted",
            "mail",
        ]
        b.pending_events()  # what came before the subscription (presence)
        await a.call("reservations.acquire", paths=["src/b.py"])
        await a.call("reservations.release", paths=["src/b.py"])
        await a.call("mail.send", to=[bob["alias"]], subject="one", body="x")
        assert await _events_until(b, "one") == ["reservation.granted", "mail"]
        assert await b.subscribe(None) is None
        await a.call("reservations.acquire", paths=["src/b.py"])
        await a.call("mail.send", to=[bob["alias"]], subject="two", body="x")
        assert await _events_until(b, "two") == ["reservation.granted", "mail"]
        await a.call("reservations.release", paths=["src/b.py"])


async def test_a_subscription_never_shows_mail_sent_to_others(hub_server, slug):
    alice, bob, carol = await _team(hub_server, slug, 3)
    async with (
        HubClient(hub_server.ws_url, alice["api_key"]) as a,
        HubClient(hub_server.ws_url, carol["api_key"], events=["*"]) as c,
    ):
        await a.call("mail.send", to=[bob["alias"]], subject="private", body="x")
        await a.call("mail.send", to=[carol["alias"]], subject="yours", body="x")
        event = await c.next_event("mail")
        assert event["data"]["subject"] == "yours"


async def test_resume_replays_only_subscribed_types(hub_server, slug):
    alice, bob = await _team(hub_server, slug)
    async with HubClient(hub_server.ws_url, alice["api_key"]) as a:
        await a.call("mail.send", to=[bob["alias"]], subject="start", body="x")
        async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
            start = int((await b.call("events.since", cursor=0))["events"][-1]["cursor"])
        await a.call("reservations.acquire", paths=["src/c.py"])
        await a.call("mail.send", to=[bob["alias"]], subject="later", body="x")
    async with HubClient(hub_server.ws_url, bob["api_key"], cursor=start, events=["mail"]) as b:
        # (the replay may repeat "start": events near the cursor come again)
        assert set(await _events_until(b, "later")) == {"mail"}


async def test_bad_topics_are_refused_and_change_nothing(hub_server, slug):
    (alice,) = await _team(hub_server, slug, 1)
    headers = {"Authorization": f"Bearer {alice['api_key']}"}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(hub_server.ws_url + "/v1/ws?events=Mail!", additional_headers=headers):
            pass
    assert refused.value.response.status_code == 400
    assert b"not an event type" in refused.value.response.body
    with pytest.raises(InvalidStatus) as refused:
        async with connect(hub_server.ws_url + "/v1/ws?cursor=-1", additional_headers=headers):
            pass
    assert refused.value.response.status_code == 400
    assert b"non-negative" in refused.value.response.body
    bob = await onboard(hub_server.http_url, slug, "bob")
    async with (
        HubClient(hub_server.ws_url, alice["api_key"]) as a,
        HubClient(hub_server.ws_url, bob["api_key"], events=["mail"]) as b,
    ):
        with pytest.raises(RpcError) as error:
            await b.call("session.subscribe", events=["no spaces"])
        assert error.value.code == ErrorCode.INVALID_PARAMS
        with pytest.raises(RpcError):
            await b.call("session.subscribe")
        # The refused calls left the subscription as it was.
        await a.call("reservations.acquire", paths=["src/d.py"])
        await a.call("mail.send", to=["bob"], subject="still", body="x")
        assert await _events_until(b, "still") == ["mail"]


async def test_the_client_keeps_its_subscription_across_reconnects(hub_server, slug):
    alice, bob = await _team(hub_server, slug)
    async with (
        HubClient(hub_server.ws_url, alice["api_key"]) as a,
        HubClient(hub_server.ws_url, bob["api_key"], events=["mail"]) as b,
    ):
        assert b._ws is not None
        await b._ws.close()  # the connection drops; the client reconnects by itself
        async with asyncio.timeout(5):
            while b.connections < 2:  # noqa: ASYNC110 - the client has no reconnect event
                await asyncio.sleep(0.01)
        await b.wait_connected()
        await a.call("reservations.acquire", paths=["src/e.py"])
        await a.call("mail.send", to=[bob["alias"]], subject="after", body="x")
        assert set(await _events_until(b, "after")) == {"mail"}


async def test_misspelt_event_types_are_refused(hub_server, slug):
    (alice,) = await _team(hub_server, slug, 1)
    headers = {"Authorization": f"Bearer {alice['api_key']}"}
    for query in ("mial", "mail,reservation.grant", "chat.mesage", "reservations"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                hub_server.ws_url + f"/v1/ws?events={query}", additional_headers=headers
            ):
                pass
        assert refused.value.response.status_code == 400, query
        assert b"not an event type" in refused.value.response.body
    async with HubClient(hub_server.ws_url, alice["api_key"]) as a:
        with pytest.raises(RpcError) as error:
            await a.call("session.subscribe", events=["mail", "chat.mesage"])
        assert error.value.code == ErrorCode.INVALID_PARAMS
        assert "chat.mesage" in error.value.message
        # Families and exact types of the catalogue are accepted.
        done = await a.call("session.subscribe", events=["reservation", "chat.message", "mail"])
        assert done["events"] == ["reservation", "chat.message", "mail"]
