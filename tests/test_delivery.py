"""Delivery states of mail (stored -> pushed -> shown -> read -> acked),
seen by the sender over WebSocket and the HTTP shim; the resumable waits
(``chat.wait``, ``escalations.wait``); and who may ask."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from hub.services import delivery
from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.support import RunningHub, grant_coordinator, onboard, running_hub, unique


async def states(client: HubClient, message_id: str) -> dict[str, str]:
    result = await client.call("mail.receipts", message_ids=[message_id])
    return {r["alias"]: r["state"] for r in result["messages"][0]["recipients"]}


async def test_the_sender_sees_each_state_of_each_copy(hub_server: RunningHub) -> None:
    slug = unique("dlv")
    alice = await onboard(hub_server.http_url, slug, "alice")
    bob = await onboard(hub_server.http_url, slug, "bob")
    carol = await onboard(hub_server.http_url, slug, "carol")
    async with HubClient(hub_server.ws_url, alice["api_key"]) as a:
        sent = await a.call("mail.send", to=["bob", "carol"], body="release at 5")
        mid = sent["message_id"]
        assert await states(a, mid) == {"bob": "stored", "carol": "stored"}
        # Bob's session resumes from the start: the replay pushes the mail.
        async with HubClient(hub_server.ws_url, bob["api_key"], cursor=0) as b:
            await b.next_event("mail")
            # Noted when the session took the event; receipts write it first.
            assert (await states(a, mid))["bob"] == "pushed"
            async with httpx.AsyncClient(base_url=hub_server.http_url) as http:
                auth = {"Authorization": f"Bearer {bob['api_key']}"}
                news = (await http.post("/v1/news", json={}, headers=auth)).json()
                assert [m["message_id"] for m in news["mail"]] == [mid]
                assert (await states(a, mid))["bob"] == "shown"
                again = (await http.post("/v1/news", json={}, headers=auth)).json()
                assert again["mail"] == [] and again["empty"] is True

                await b.call("mail.inbox")
                assert (await states(a, mid))["bob"] == "read"
                await b.call("mail.ack", message_ids=[mid])
                assert await states(a, mid) == {"bob": "acked", "carol": "stored"}

                shim = await http.get(
                    "/v1/messages/receipts",
                    params={"message_ids": mid},
                    headers={"Authorization": f"Bearer {alice['api_key']}"},
                )
                assert shim.status_code == 200
                (message,) = shim.json()["messages"]
                assert message["state"] == "stored"  # carol has not had it yet
                bob_copy = next(r for r in message["recipients"] if r["alias"] == "bob")
                assert bob_copy["stored_at"] <= bob_copy["pushed_at"] <= bob_copy["shown_at"]
                assert bob_copy["shown_at"] <= bob_copy["read_at"] <= bob_copy["acked_at"]

                # Without ids: the caller's last sent messages.
                last = (await a.call("mail.receipts"))["messages"]
                assert [m["message_id"] for m in last] == [mid]

                # Only the sender (or a human) sees a message's receipts.
                with pytest.raises(RpcError) as refused:
                    await b.call("mail.receipts", message_ids=[mid])
                assert refused.value.code == ErrorCode.NOT_FOUND
                denied = await http.get(
                    "/v1/messages/receipts",
                    params={"message_ids": mid},
                    headers={"Authorization": f"Bearer {carol['api_key']}"},
                )
                assert denied.status_code == 404
                assert (await http.post("/v1/news", json={})).status_code == 401
                assert (await http.get("/v1/messages/receipts")).status_code == 401


async def test_states_noted_just_before_a_stop_are_written(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No timer writes them here: only the stop can.
    monkeypatch.setattr(delivery, "FLUSH_DELAY_SECONDS", 3600)
    slug = unique("dlvstop")
    async with running_hub(database_url=database_url, bus_url="memory://") as first:
        alice = await onboard(first.http_url, slug, "alice")
        bob = await onboard(first.http_url, slug, "bob")
        async with (
            HubClient(first.ws_url, alice["api_key"]) as a,
            HubClient(first.ws_url, bob["api_key"]) as b,
        ):
            sent = await a.call("mail.send", to=["bob"], body="before the stop")
            await b.next_event("mail")
    async with (
        running_hub(database_url=database_url, bus_url="memory://") as second,
        HubClient(second.ws_url, alice["api_key"]) as a,
    ):
        assert await states(a, sent["message_id"]) == {"bob": "pushed"}


async def test_another_project_sees_no_receipts(hub_server: RunningHub) -> None:
    slug = unique("dlv")
    alice = await onboard(hub_server.http_url, slug, "alice")
    await onboard(hub_server.http_url, slug, "bob")
    mallory = await onboard(hub_server.http_url, unique("evil"), "mallory")
    async with HubClient(hub_server.ws_url, alice["api_key"]) as a:
        sent = await a.call("mail.send", to=["bob"], body="private")
    async with HubClient(hub_server.ws_url, mallory["api_key"]) as m:
        with pytest.raises(RpcError) as refused:
            await m.call("mail.receipts", message_ids=[sent["message_id"]])
        assert refused.value.code == ErrorCode.NOT_FOUND
        with pytest.raises(RpcError) as bad:
            await m.call("mail.receipts", message_ids=["not-an-id"])
        assert bad.value.code == ErrorCode.INVALID_PARAMS


async def test_chat_wait_refuses_a_stranger_and_a_bad_wait(hub_server: RunningHub) -> None:
    slug = unique("dlv")
    alice = await onboard(hub_server.http_url, slug, "alice")
    await onboard(hub_server.http_url, slug, "bob")
    carol = await onboard(hub_server.http_url, slug, "carol")
    async with HubClient(hub_server.ws_url, alice["api_key"]) as a:
        sid = (await a.call("chat.send", to=["bob"], body="hi"))["session_id"]
        with pytest.raises(RpcError) as bad:
            await a.call("chat.wait", session_id=sid, wait=0)
        assert bad.value.code == ErrorCode.INVALID_PARAMS
    async with HubClient(hub_server.ws_url, carol["api_key"]) as c:
        with pytest.raises(RpcError) as refused:
            await c.call("chat.wait", session_id=sid, wait=1)
        assert refused.value.code == ErrorCode.NOT_FOUND


async def test_escalation_wait_is_woken_by_the_answer_and_stays_in_its_project(
    hub_server: RunningHub,
) -> None:
    slug = unique("dlv")
    alice = await onboard(hub_server.http_url, slug, "alice")
    lead = await onboard(hub_server.http_url, slug, "lead", role="coordinator")
    await grant_coordinator(hub_server, lead)  # a declared role grants nothing
    mallory = await onboard(hub_server.http_url, unique("evil"), "mallory")
    async with (
        HubClient(hub_server.ws_url, alice["api_key"]) as a,
        HubClient(hub_server.ws_url, lead["api_key"]) as coordinator,
    ):
        escalation = await a.call("escalations.create", subject="Go?", situation="Ship it?")
        eid = escalation["escalation_id"]
        waiting = asyncio.create_task(a.call("escalations.wait", escalation_id=eid, wait=60))
        await asyncio.sleep(0)
        await coordinator.call("escalations.respond", escalation_id=eid, response="Ship it.")
        answered = await asyncio.wait_for(waiting, 10)
        assert answered["status"] == "answered" and answered["response"] == "Ship it."
        timed_out = await a.call(
            "escalations.wait",
            escalation_id=(await a.call("escalations.create", subject="x", situation="y"))[
                "escalation_id"
            ],
            wait=0.2,
        )
        assert timed_out["status"] == "pending" and timed_out["waited_seconds"] >= 0.2
    async with HubClient(hub_server.ws_url, mallory["api_key"]) as m:
        with pytest.raises(RpcError) as refused:
            await m.call("escalations.wait", escalation_id=eid, wait=1)
        assert refused.value.code == ErrorCode.NOT_FOUND
