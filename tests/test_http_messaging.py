"""Mail and chat through the bdh shim: both clients' bodies, the SSE
send-and-wait stream, and messages crossing between HTTP and WebSocket
agents."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hub.transport.http import outputs as o
from tests.shim import Shim, bdh_agent, error, in_seconds, ok, sse
from tests.support import REDIS_URL, RunningHub, running_hub, unique

NewAgent = Callable[..., Awaitable[Shim]]


def bdh_send(sender: Shim, to: Shim, body: str, **extra: Any) -> dict[str, Any]:
    """bdh's SendRequest."""
    return {
        "from_workspace": sender.id,
        "to_workspace": to.id,
        "from_alias": sender.alias,
        "subject": "API ready",
        "body": body,
        "priority": "high",
        **extra,
    }


async def inbox(shim: Shim, **params: Any) -> list[dict[str, Any]]:
    answer = ok(
        await shim.get("/v1/messages/inbox", workspace_id=shim.id, **params), o.InboxResponse
    )
    assert answer["count"] == len(answer["messages"])
    return answer["messages"]  # type: ignore[no-any-return]


# -- mail ----------------------------------------------------------------------------------


async def test_bdh_mail_send_inbox_and_ack(agent: NewAgent):
    alice, bob, carol = await agent("alice"), await agent("bob"), await agent("carol")
    sent = ok(
        await alice.post("/v1/messages", bdh_send(alice, bob, "bd-12 is merged")),
        o.SendMessageResponse,
    )
    assert sent["status"] == "delivered" and sent["delivered_at"]

    [message] = await inbox(bob, limit=10, unread_only="true")
    assert message["message_id"] == sent["message_id"]
    # bdh's Message and the aw library's InboxMessage, both readable.
    assert (message["from_workspace"], message["from_agent_id"]) == (alice.id, alice.id)
    assert (message["from_alias"], message["subject"], message["body"]) == (
        "alice",
        "API ready",
        "bd-12 is merged",
    )
    assert message["priority"] == "high" and message["read"] is False
    assert message["read_at"] is None and message["thread_id"]

    await carol.post("/v1/messages", bdh_send(carol, bob, "hello from carol", priority="low"))
    assert [m["from_alias"] for m in await inbox(bob, from_workspace=alice.id)] == ["alice"]
    assert [m["from_alias"] for m in await inbox(bob, from_alias="carol")] == ["carol"]
    assert await inbox(bob, from_workspace=alice.id, from_alias="carol") == []
    assert await inbox(bob, from_workspace=bob.id) == []
    # A page size over the hub's maximum is served at the maximum.
    assert len(await inbox(bob, limit=100_000)) == 2
    page = ok(await bob.get("/v1/messages/inbox", workspace_id=bob.id, limit=1), o.InboxResponse)
    assert page["count"] == 1 and page["has_more"] is True

    acked = ok(
        await bob.post(f"/v1/messages/{sent['message_id']}/ack", {"workspace_id": bob.id}),
        o.AckResponse,
    )
    assert acked["message_id"] == sent["message_id"] and acked["acknowledged_at"]
    assert [m["from_alias"] for m in await inbox(bob, unread_only="true")] == ["carol"]
    read = {m["from_alias"]: m for m in await inbox(bob)}
    assert read["alice"]["read"] is True and read["alice"]["read_at"]
    assert await inbox(carol) == []


async def test_aw_mail_by_alias_and_agent_id(agent: NewAgent):
    alice, bob = await agent("alice"), await agent("bob")
    by_alias = {"to_alias": "bob", "subject": "hi", "body": "by alias", "priority": "normal"}
    ok(await alice.post("/v1/messages", by_alias), o.SendMessageResponse)
    by_id = {"to_agent_id": bob.id, "body": "by id", "thread_id": None}
    sent = ok(await alice.post("/v1/messages", by_id), o.SendMessageResponse)
    messages = await inbox(bob)
    assert [m["body"] for m in messages] == ["by id", "by alias"]
    # The aw library acks with no body at all.
    ok(await bob.post(f"/v1/messages/{sent['message_id']}/ack"), o.AckResponse)
    assert [m["body"] for m in await inbox(bob, unread_only="true")] == ["by alias"]


async def test_mail_crosses_between_http_and_websocket_agents(agent: NewAgent, connect):
    alice, bob = await agent("alice"), await agent("bob")
    ws_bob = await connect(bob.agent)
    await alice.post("/v1/messages", bdh_send(alice, bob, "over HTTP"))
    event = await ws_bob.next_event("mail", timeout=2)
    assert event["data"]["body"] == "over HTTP" and event["data"]["from_alias"] == "alice"

    await ws_bob.call("mail.send", to=["alice"], subject="re", body="over the socket")
    [message] = await inbox(alice)
    assert (message["from_workspace"], message["body"]) == (bob.id, "over the socket")


async def test_bad_mail_is_refused_and_writes_nothing(agent: NewAgent):
    alice, bob = await agent("alice"), await agent("bob")
    mallory = await agent("mallory", project=unique("other"))
    # Another project's workspace is not a recipient here, and vice versa.
    error(await alice.post("/v1/messages", bdh_send(alice, mallory, "leak?")), 404)
    error(await mallory.post("/v1/messages", bdh_send(mallory, bob, "spam")), 404)
    # Speaking for another workspace.
    error(await bob.post("/v1/messages", bdh_send(alice, bob, "forged")), 403)
    error(await alice.post("/v1/messages", {"to_alias": "bob"}), 422)
    error(await alice.post("/v1/messages", {"to_alias": "bob", "body": 7}), 422)
    error(await alice.post("/v1/messages", {"body": "to nobody"}), 422)
    error(
        await alice.post("/v1/messages", {"to_alias": "bob", "body": "x", "priority": "meh"}), 422
    )
    error(await alice.post("/v1/messages", {"to_alias": "bob", "body": "x" * 70_000}), 413)
    assert await inbox(bob) == [] and await inbox(mallory) == []

    sent = ok(await alice.post("/v1/messages", bdh_send(alice, bob, "real")), o.SendMessageResponse)
    # Only the recipient can ack, and only in its own inbox.
    error(await mallory.post(f"/v1/messages/{sent['message_id']}/ack"), 404)
    error(await alice.post(f"/v1/messages/{sent['message_id']}/ack"), 404)
    error(await bob.post(f"/v1/messages/{sent['message_id']}/ack", {"workspace_id": alice.id}), 403)
    error(await bob.get("/v1/messages/inbox", workspace_id=alice.id), 403)
    error(await bob.get("/v1/messages/inbox", limit=0), 422)
    assert [m["read"] for m in await inbox(bob)] == [False]


# -- chat ----------------------------------------------------------------------------------


async def test_send_and_wait_over_http_with_read_receipt_and_hang_on(agent: NewAgent):
    alice, bob = await agent("alice"), await agent("bob")
    opened = ok(
        await alice.post(
            "/v1/chat/sessions",
            {
                "from_workspace": alice.id,
                "from_alias": "alice",
                "to_aliases": ["bob"],
                "message": "is the API up?",
            },
        ),
        o.ChatCreateSessionResponse,
    )
    session = opened["session_id"]
    assert opened["sse_url"] == f"/v1/chat/sessions/{session}/stream"
    assert {(p["alias"], p["workspace_id"]) for p in opened["participants"]} == {
        ("alice", alice.id),
        ("bob", bob.id),
    }
    assert opened["targets_connected"] == [] and opened["targets_left"] == []

    async with sse(alice, session, in_seconds(20)) as stream:
        # bdh skips events until it sees its own message: it is replayed.
        mine = await stream.next()
        assert (mine["event"], mine["message_id"]) == ("message", opened["message_id"])

        pending = ok(await bob.get("/v1/chat/pending"), o.ChatPendingResponse)
        [item] = pending["pending"]
        assert item["session_id"] == session and item["sender_waiting"] is True
        assert 0 < item["time_remaining_seconds"] <= 20
        assert (item["last_from"], item["last_message"], item["unread_count"]) == (
            "alice",
            "is the API up?",
            1,
        )

        read = ok(
            await bob.post(
                f"/v1/chat/sessions/{session}/read",
                {"workspace_id": bob.id, "up_to_message_id": opened["message_id"]},
            ),
            o.ChatMarkReadResponse,
        )
        assert read["success"] and read["messages_marked"] == 1
        receipt = await stream.next()
        o.ChatEvent.model_validate({k: v for k, v in receipt.items() if k != "event"}, strict=True)
        assert receipt["event"] == receipt["type"] == "read_receipt"
        assert receipt["reader_alias"] == "bob" and receipt["extends_wait_seconds"] > 0

        hold = ok(
            await bob.post(
                f"/v1/chat/sessions/{session}/messages",
                {"workspace_id": bob.id, "alias": "bob", "body": "checking", "hang_on": True},
            ),
            o.ChatSendMessageResponse,
        )
        assert hold["delivered"] and hold["extends_wait_seconds"] > 0
        held = await stream.next()
        assert (held["event"], held["from_agent"], held["hang_on"]) == ("message", "bob", True)

        reply = {"workspace_id": bob.id, "alias": "bob", "body": "yes, deployed"}
        ok(
            await bob.post(f"/v1/chat/sessions/{session}/messages", reply),
            o.ChatSendMessageResponse,
        )
        answer = await stream.next()
        o.ChatEvent.model_validate({k: v for k, v in answer.items() if k != "event"}, strict=True)
        assert (answer["from_agent"], answer["body"], answer["session_id"]) == (
            "bob",
            "yes, deployed",
            session,
        )
        assert answer["sender_leaving"] is False and answer["timestamp"]

    history = ok(await alice.get(f"/v1/chat/sessions/{session}/messages"), o.ChatHistoryResponse)
    assert [(m["from_agent"], m["body"]) for m in history["messages"]] == [
        ("alice", "is the API up?"),
        ("bob", "checking"),
        ("bob", "yes, deployed"),
    ]
    unread = ok(
        await alice.get(f"/v1/chat/sessions/{session}/messages", unread_only="true", limit=1),
        o.ChatHistoryResponse,
    )
    assert [m["body"] for m in unread["messages"]] == ["yes, deployed"]
    sessions = ok(await bob.get("/v1/chat/sessions"), o.ChatListSessionsResponse)["sessions"]
    assert [(s["session_id"], s["participants"]) for s in sessions] == [(session, ["alice", "bob"])]


async def test_http_chat_answered_from_a_websocket_agent_and_back(agent: NewAgent, connect):
    alice, bob = await agent("alice"), await agent("bob")
    ws_bob = await connect(bob.agent)
    opened = ok(
        await alice.post("/v1/chat/sessions", {"to_aliases": ["bob"], "message": "ping over HTTP"}),
        o.ChatCreateSessionResponse,
    )
    # Online is not listening: bob's socket is not waiting on this conversation.
    assert opened["targets_connected"] == []
    session = opened["session_id"]
    async with sse(alice, session, in_seconds(20)) as stream:
        await stream.next()  # alice's own message
        event = await ws_bob.next_event("chat.message", timeout=2)
        assert event["data"]["body"] == "ping over HTTP"
        await ws_bob.call("chat.send", session_id=session, body="pong over the socket")
        reply = await stream.next()
        assert (reply["from_agent"], reply["body"]) == ("bob", "pong over the socket")

    # The socket agent waits; the HTTP agent answers.
    waiting = asyncio.create_task(ws_bob.call("chat.send", to=["alice"], body="your turn", wait=10))
    for _ in range(100):
        pending = ok(await alice.get("/v1/chat/pending"), o.ChatPendingResponse)["pending"]
        if pending and pending[0]["sender_waiting"]:
            break
        await asyncio.sleep(0.05)
    assert pending[0]["last_message"] == "your turn"
    ok(
        await alice.post(f"/v1/chat/sessions/{session}/messages", {"body": "answered over HTTP"}),
        o.ChatSendMessageResponse,
    )
    result = await asyncio.wait_for(waiting, 5)
    assert result["status"] == "replied" and result["reply"]["body"] == "answered over HTTP"


async def test_the_stream_ends_at_its_deadline(agent: NewAgent):
    alice, _bob = await agent("alice"), await agent("bob")
    opened = ok(
        await alice.post("/v1/chat/sessions", {"to_aliases": ["bob"], "message": "anyone?"}),
        o.ChatCreateSessionResponse,
    )
    async with sse(alice, opened["session_id"], in_seconds(1)) as stream:
        await stream.next()
        with pytest.raises(StopAsyncIteration):
            await stream.next(timeout=5)


async def test_bad_chat_calls(agent: NewAgent):
    alice, bob = await agent("alice"), await agent("bob")
    mallory = await agent("mallory", project=unique("other"))
    error(await alice.post("/v1/chat/sessions", {"to_aliases": ["mallory"], "message": "hi"}), 404)
    error(await alice.post("/v1/chat/sessions", {"to_aliases": [], "message": "hi"}), 422)
    error(await alice.post("/v1/chat/sessions", {"to_aliases": "bob", "message": "hi"}), 422)
    error(await alice.post("/v1/chat/sessions", {"to_aliases": ["bob"]}), 422)
    opened = ok(
        await alice.post("/v1/chat/sessions", {"to_aliases": ["bob"], "message": "hi"}),
        o.ChatCreateSessionResponse,
    )
    session = opened["session_id"]
    stream = f"/v1/chat/sessions/{session}/stream"
    error(await alice.get(stream), 422)
    error(await alice.get(stream, deadline="2001-01-01T00:00:00Z"), 422)
    error(await alice.get(stream, deadline="tomorrow"), 422)
    future = in_seconds(30).isoformat()
    error(await mallory.get(stream, deadline=future), 404)
    error(await mallory.get(f"/v1/chat/sessions/{session}/messages"), 404)
    error(await mallory.post(f"/v1/chat/sessions/{session}/messages", {"body": "intrude"}), 404)
    error(
        await mallory.post(
            f"/v1/chat/sessions/{session}/read", {"up_to_message_id": opened["message_id"]}
        ),
        404,
    )
    error(await bob.post(f"/v1/chat/sessions/{session}/messages", {"body": 1}), 422)
    error(await bob.post(f"/v1/chat/sessions/{session}/read", {}), 422)
    history = ok(await bob.get(f"/v1/chat/sessions/{session}/messages"), o.ChatHistoryResponse)
    assert [m["body"] for m in history["messages"]] == ["hi"]
    assert ok(await mallory.get("/v1/chat/pending"), o.ChatPendingResponse)["pending"] == []


async def test_the_stream_hears_a_reply_sent_to_another_instance(
    redis_hub_server: RunningHub, database_url: str, bus_prefix: str, slug: str
):
    """Two hub instances sharing PostgreSQL and Redis: the waiter streams
    from one, the answer is posted to the other."""
    async with running_hub(
        database_url=database_url, bus_url=REDIS_URL, bus_prefix=bus_prefix
    ) as other:
        alice = await bdh_agent(redis_hub_server.http_url, slug, "alice")
        bob = await bdh_agent(other.http_url, slug, "bob")
        try:
            opened = ok(
                await alice.post("/v1/chat/sessions", {"to_aliases": ["bob"], "message": "there?"}),
                o.ChatCreateSessionResponse,
            )
            session = opened["session_id"]
            async with sse(alice, session, in_seconds(20)) as stream:
                await stream.next()
                await bob.post(
                    f"/v1/chat/sessions/{session}/read",
                    {"up_to_message_id": opened["message_id"]},
                )
                assert (await stream.next())["event"] == "read_receipt"
                await bob.post(f"/v1/chat/sessions/{session}/messages", {"body": "here"})
                reply = await stream.next()
            assert (reply["from_agent"], reply["body"]) == ("bob", "here")
        finally:
            await alice.close()
            await bob.close()
