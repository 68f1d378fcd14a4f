"""The MCP tools, driven with the official ``mcp`` SDK's client over both
endpoints: ``beadhub mcp`` (stdio, holding the agent's WebSocket session)
and ``/mcp`` on the hub (Streamable HTTP, stateless). Every tool's happy
path and its main refusal, waits answered by WebSocket agents, progress,
cancellation, and who may call."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from mcp import Client

from protocol.client import HubClient
from tests.mcp_support import TRANSPORTS, call, http_transport, mcp_client, refused, text
from tests.support import RunningHub, grant_coordinator, onboard, unique
from tests.test_beads import issue, jsonl

EXPECTED_TOOLS = {
    "status",
    "policy",
    "ready",
    "claim",
    "release",
    "reserve",
    "unreserve",
    "reservations",
    "mail_send",
    "mail_inbox",
    "mail_ack",
    "mail_receipts",
    "chat_send",
    "chat_reply",
    "chat_wait",
    "chat_pending",
    "escalate",
}


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def team(server: RunningHub) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    slug = unique("mcp")
    alice = await onboard(server.http_url, slug, "alice", role="backend")
    bob = await onboard(server.http_url, slug, "bob")
    lead = await onboard(server.http_url, slug, "lead", role="coordinator")
    await grant_coordinator(server, lead)  # a declared role grants nothing
    return alice, bob, lead


async def test_tools_are_listed_with_short_descriptions_and_schemas(
    hub_server: RunningHub, transport: str
) -> None:
    alice, _, _ = await team(hub_server)
    async with mcp_client(transport, hub_server.http_url, alice["api_key"]) as client:
        listed = (await client.list_tools()).tools
    assert {t.name for t in listed} == EXPECTED_TOOLS
    for t in listed:
        assert t.description and len(t.description) <= 80, t.name
        assert t.input_schema["type"] == "object"
    send = next(t for t in listed if t.name == "mail_send")
    assert send.input_schema["required"] == ["to", "body"]


async def test_issues_claims_and_policy(hub_server: RunningHub, transport: str) -> None:
    alice, bob, _ = await team(hub_server)
    async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
        await b.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-1"), issue("bd-2")))
        await b.call("claims.claim", bead_id="bd-2")
    async with mcp_client(transport, hub_server.http_url, alice["api_key"]) as client:
        status = await call(client, "status")
        assert status["workspace"]["alias"] == "alice"
        assert {a["alias"] for a in status["agents"]} >= {"alice", "bob", "lead"}

        ready = await call(client, "ready")
        assert [i["bead_id"] for i in ready["issues"]] == ["bd-1"]
        error, _ = await refused(client, "ready", limit=0)
        assert error["code"] == -32602
        error, _ = await refused(client, "status", verbose=True)
        assert error["code"] == -32602

        claimed = await call(client, "claim", bead_id="bd-1")
        assert claimed["claim"]["alias"] == "alice" and claimed["acquired"]
        error, line = await refused(client, "claim", bead_id="bd-2")
        assert error["code"] == -32009 and error["data"]["holder_alias"] == "bob"
        assert "bob" in line and "`ready`" in line

        error, _ = await refused(client, "release", bead_id="bd-2")
        assert error["code"] == -32009
        released = await call(client, "release", bead_id="bd-1")
        assert released["released"] is True

        policy = await call(client, "policy")
        assert policy["selected_role"]["role"] == "backend"
        assert policy["invariants"]
        error, line = await refused(client, "policy", role="astronaut")
        assert error["code"] == -32004 and "backend" in str(error["data"])

        error, line = await refused(client, "claim")
        assert error["code"] == -32602 and "bead_id" in line and "Fix the arguments" in line


async def test_reservations(hub_server: RunningHub, transport: str) -> None:
    alice, bob, _ = await team(hub_server)
    async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
        await b.call("reservations.acquire", paths=["src/web/**"])
    async with mcp_client(transport, hub_server.http_url, alice["api_key"]) as client:
        got = await call(client, "reserve", paths=["src/api/x.py", "src/web/app.js"], reason="fix")
        assert [g["path"] for g in got["granted"]] == ["src/api/x.py"]
        assert got["conflicts"][0]["held_by"] == "bob"

        listed = await call(client, "reservations", holder_alias="alice")
        assert [r["path"] for r in listed["reservations"]] == ["src/api/x.py"]
        error, _ = await refused(client, "reservations", path_prefix=7)
        assert error["code"] == -32602
        error, _ = await refused(client, "unreserve", paths=[])
        assert error["code"] == -32602

        error, _ = await refused(client, "reserve", paths=["../etc/passwd"])
        assert error["code"] == -32602

        gone = await call(client, "unreserve", paths=["src/api/x.py", "src/web/**"])
        assert gone["released"] == ["src/api/x.py"] and gone["not_owner"] == ["src/web/**"]


async def test_mail_send_inbox_ack_and_receipts(hub_server: RunningHub, transport: str) -> None:
    alice, bob, _ = await team(hub_server)
    async with (
        HubClient(hub_server.ws_url, bob["api_key"]) as b,
        mcp_client(transport, hub_server.http_url, alice["api_key"]) as client,
    ):
        sent = await call(client, "mail_send", to=["bob"], body="deploy at 5", subject="ops")
        pushed = await b.next_event("mail")
        assert pushed["data"]["message_id"] == sent["message_id"]

        error, line = await refused(client, "mail_send", to=["nobody"], body="x")
        assert error["code"] == -32004 and "nobody" in line

        await b.call("mail.send", to=["alice"], body="roger", thread_id=sent["thread_id"])
        inbox = await call(client, "mail_inbox")
        assert [m["body"] for m in inbox["messages"]] == ["roger"]
        error, _ = await refused(client, "mail_inbox", limit=1000)
        assert error["code"] == -32602
        acked = await call(client, "mail_ack", message_ids=[inbox["messages"][0]["message_id"]])
        assert acked["count"] == 1
        assert (await call(client, "mail_inbox"))["count"] == 0
        error, _ = await refused(client, "mail_ack", message_ids=[sent["message_id"]])
        assert error["code"] == -32004  # her own sent message is not in her inbox

        await b.call("mail.ack", message_ids=[sent["message_id"]])
        receipts = await call(client, "mail_receipts", message_ids=[sent["message_id"]])
        (copy,) = receipts["messages"][0]["recipients"]
        assert copy["alias"] == "bob" and copy["state"] == "acked"
        assert copy["pushed_at"] is not None and copy["acked_at"] is not None


async def test_chat_send_and_wait_is_answered_by_a_websocket_agent(
    hub_server: RunningHub, transport: str
) -> None:
    alice, bob, _ = await team(hub_server)
    async with HubClient(hub_server.ws_url, bob["api_key"]) as b:

        async def bob_answers() -> None:
            event = await b.next_event("chat.message", timeout=30)
            pending = await b.call("chat.pending")
            assert pending["pending"][0]["sender_waiting"] is True
            await b.call("chat.send", session_id=event["data"]["session_id"], body="yes, go")

        answering = asyncio.create_task(bob_answers())
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        async with mcp_client(transport, hub_server.http_url, alice["api_key"]) as client:
            result = await client.call_tool(
                "chat_send",
                {"to": ["bob"], "body": "may I?", "wait": 30},
                progress_callback=on_progress,
            )
            await answering
            assert not result.is_error, text(result)
            answer = result.structured_content or {}
            assert answer["status"] == "replied" and answer["reply"]["body"] == "yes, go"
            assert text(result) == "replied: bob: yes, go"
            assert progress and progress[0][1] == 30

            # Bob asks back; alice finds it pending and replies in the session.
            await b.call("chat.send", session_id=answer["session_id"], body="and you?")
            pending = await call(client, "chat_pending")
            assert pending["pending"][0]["last_message"] == "and you?"
            replied = await call(client, "chat_reply", session_id=answer["session_id"], body="fine")
            assert replied["status"] == "sent"
            error, _ = await refused(
                client, "chat_reply", session_id="00000000-0000-0000-0000-000000000000", body="x"
            )
            assert error["code"] == -32004
            error, line = await refused(client, "chat_send", to=["nobody"], body="hi")
            assert error["code"] == -32004 and "nobody" in line
            error, _ = await refused(client, "chat_wait", wait=1)
            assert error["code"] == -32602
            error, line = await refused(client, "chat_wait", to=["lead"], wait=1)
            assert error["code"] == -32004 and "no chat with lead" in line
            error, _ = await refused(client, "chat_pending", extra=1)
            assert error["code"] == -32602


async def test_a_wait_cut_off_is_resumed_from_the_store(
    hub_server: RunningHub, transport: str
) -> None:
    """The reply came while nobody waited: chat_wait finds it at once."""
    alice, bob, _ = await team(hub_server)
    async with (
        HubClient(hub_server.ws_url, bob["api_key"]) as b,
        mcp_client(transport, hub_server.http_url, alice["api_key"]) as client,
    ):
        first = await call(client, "chat_send", to=["bob"], body="ping", wait=0.2)
        assert first["status"] == "timeout"
        await b.call("chat.send", session_id=first["session_id"], body="pong")
        resumed = await call(client, "chat_wait", session_id=first["session_id"], wait=30)
        assert resumed["status"] == "replied" and resumed["reply"]["body"] == "pong"
        assert resumed["waited_seconds"] == 0


async def test_cancelling_a_wait_ends_it_on_the_hub(hub_server: RunningHub, transport: str) -> None:
    alice, bob, _ = await team(hub_server)
    async with (
        HubClient(hub_server.ws_url, bob["api_key"]) as b,
        mcp_client(transport, hub_server.http_url, alice["api_key"]) as client,
    ):
        waiting = asyncio.create_task(
            client.call_tool("chat_send", {"to": ["bob"], "body": "there?", "wait": 120})
        )
        event = await b.next_event("chat.message", timeout=30)
        sid = event["data"]["session_id"]

        async def sender_waiting() -> bool:
            pending = (await b.call("chat.pending"))["pending"]
            return bool(pending and pending[0]["sender_waiting"])

        for _ in range(200):
            if await sender_waiting():
                break
            await asyncio.sleep(0.05)
        assert await sender_waiting()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        for _ in range(200):
            if not await sender_waiting():
                break
            await asyncio.sleep(0.05)
        assert not await sender_waiting(), f"alice still shown waiting in {sid}"


async def test_claim_and_reserve_wait_in_line_until_the_holder_releases(
    hub_server: RunningHub, transport: str
) -> None:
    """A conflict met with ``wait`` queues; bob (a WebSocket agent)
    releases, and alice's tool call is answered with the grant."""
    alice, bob, _ = await team(hub_server)
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with (
        HubClient(hub_server.ws_url, bob["api_key"]) as b,
        mcp_client(transport, hub_server.http_url, alice["api_key"]) as client,
    ):
        await b.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-q")))
        await b.call("claims.claim", bead_id="bd-q")
        await b.call("reservations.acquire", paths=["src/**"])

        claiming = asyncio.create_task(
            client.call_tool(
                "claim", {"bead_id": "bd-q", "wait": 30}, progress_callback=on_progress
            )
        )
        queued = await b.next_event("claim.queued", timeout=30)
        assert queued["data"]["alias"] == "alice" and queued["data"]["bead_id"] == "bd-q"
        await b.call("claims.release", bead_id="bd-q")
        claimed = await asyncio.wait_for(claiming, 30)
        assert not claimed.is_error, text(claimed)
        answer = claimed.structured_content or {}
        assert answer["status"] == "granted" and answer["claim"]["alias"] == "alice"
        assert text(claimed).startswith("claimed bd-q")
        assert progress and progress[0][1] == 30 and "in line" in (progress[0][2] or "")

        reserving = asyncio.create_task(
            call(client, "reserve", paths=["src/app.py", "docs/x.md"], wait=30)
        )
        queued = await b.next_event("reservation.queued", timeout=30)
        assert queued["data"]["alias"] == "alice" and queued["data"]["path"] == "src/app.py"
        await b.call("reservations.release", paths=["src/**"])
        reserved = await asyncio.wait_for(reserving, 30)
        assert reserved["status"] == "granted" and reserved["queued"] == []
        assert sorted(g["path"] for g in reserved["granted"]) == ["docs/x.md", "src/app.py"]
        held = await b.call("reservations.check", paths=["src/app.py"])
        assert held["paths"][0]["exclusive_holder"]["holder_alias"] == "alice"


async def test_a_queued_wait_that_times_out_answers_the_conflict(
    hub_server: RunningHub, transport: str
) -> None:
    alice, bob, _ = await team(hub_server)
    async with (
        HubClient(hub_server.ws_url, bob["api_key"]) as b,
        mcp_client(transport, hub_server.http_url, alice["api_key"]) as client,
    ):
        await b.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-t")))
        await b.call("claims.claim", bead_id="bd-t")
        await b.call("reservations.acquire", paths=["src/app.py"])

        error, line = await refused(client, "claim", bead_id="bd-t", wait=0.5)
        assert error["code"] == -32009 and error["data"]["waited_seconds"] >= 0.5
        assert "bob" in line and "Someone else holds it" in line
        left = await b.next_event("claim.dequeued", timeout=10)
        assert left["data"]["alias"] == "alice" and left["data"]["why"] == "timeout"

        timed = await call(client, "reserve", paths=["src/app.py"], wait=0.5)
        assert timed["status"] == "timeout" and timed["queued"] == ["src/app.py"]
        assert timed["granted"] == [] and timed["conflicts"][0]["held_by"] == "bob"
        await b.next_event("reservation.dequeued", timeout=10)
        assert (await b.call("queue.list"))["waiting"] == []
        error, _ = await refused(client, "reserve", paths=["a.txt"], wait=601)
        assert error["code"] == -32602


async def test_cancelling_a_queued_claim_leaves_the_line(
    hub_server: RunningHub, transport: str
) -> None:
    alice, bob, _ = await team(hub_server)
    async with (
        HubClient(hub_server.ws_url, bob["api_key"]) as b,
        mcp_client(transport, hub_server.http_url, alice["api_key"]) as client,
    ):
        await b.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-c")))
        await b.call("claims.claim", bead_id="bd-c")
        waiting = asyncio.create_task(client.call_tool("claim", {"bead_id": "bd-c", "wait": 120}))
        await b.next_event("claim.queued", timeout=30)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        left = await b.next_event("claim.dequeued", timeout=30)
        assert left["data"]["alias"] == "alice" and left["data"]["why"] == "left"
        assert (await b.call("queue.list"))["waiting"] == []


async def test_escalate_and_wait_for_the_human_answer(
    hub_server: RunningHub, transport: str
) -> None:
    alice, _, lead = await team(hub_server)
    async with HubClient(hub_server.ws_url, lead["api_key"]) as coordinator:

        async def answer() -> None:
            event = await coordinator.next_event("escalation.created", timeout=30)
            await coordinator.call(
                "escalations.respond",
                escalation_id=event["data"]["escalation_id"],
                response="Use the v2 API.",
            )

        answering = asyncio.create_task(answer())
        async with mcp_client(transport, hub_server.http_url, alice["api_key"]) as client:
            result = await call(
                client, "escalate", subject="Which API?", situation="v1 or v2?", wait=30
            )
            await answering
            assert result["status"] == "answered" and result["response"] == "Use the v2 API."
            again = await call(client, "escalate", escalation_id=result["escalation_id"], wait=5)
            assert again["status"] == "answered" and again["response"] == "Use the v2 API."
            error, line = await refused(client, "escalate", subject="no situation")
            assert error["code"] == -32602 and "situation" in line


# -- who may call /mcp ------------------------------------------------------------------------


async def test_mcp_over_http_needs_an_agent_key(hub_server: RunningHub) -> None:
    async with httpx.AsyncClient(base_url=hub_server.http_url) as http:
        for headers in ({}, {"Authorization": "Bearer aw_sk_not_a_key"}):
            response = await http.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={**headers, "Accept": "application/json, text/event-stream"},
            )
            assert response.status_code == 401
            assert response.json()["code"] == -32001
            assert response.headers["www-authenticate"] == "Bearer"
    with pytest.raises(Exception):  # noqa: B017  (the SDK wraps the 401 its own way)
        async with Client(http_transport(hub_server.http_url, "aw_sk_wrong")) as client:
            await client.list_tools()


async def test_a_key_acts_only_in_its_own_project(hub_server: RunningHub, transport: str) -> None:
    alice, _, _ = await team(hub_server)
    stranger = await onboard(hub_server.http_url, unique("other"), "mallory")
    async with mcp_client(transport, hub_server.http_url, stranger["api_key"]) as client:
        status = await call(client, "status")
        assert {a["alias"] for a in status["agents"]} == {"mallory"}
        error, _ = await refused(client, "mail_send", to=["alice"], body="hi")
        assert error["code"] == -32004
        async with HubClient(hub_server.ws_url, alice["api_key"]) as a:
            sent = await a.call("mail.send", to=["bob"], body="secret")
        error, _ = await refused(client, "mail_receipts", message_ids=[sent["message_id"]])
        assert error["code"] == -32004
