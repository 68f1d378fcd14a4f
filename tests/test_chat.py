"""Chat over real sockets: send-and-wait answered, timed out, abandoned or
extended; pending, history and read receipts; one conversation per set of
participants; nothing crosses projects; the wait works on the memory bus,
the Redis bus and across two instances."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from hub.services import auth, chat, clock, events
from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.support import REDIS_URL, RunningHub, onboard, running_hub, unique


def _message_from(alias: str, **fields):
    return lambda e: (
        e["data"]["from_alias"] == alias and all(e["data"].get(k) == v for k, v in fields.items())
    )


async def _pair(server: RunningHub) -> tuple[dict, dict, HubClient, HubClient]:
    slug = unique("proj")
    alice = await onboard(server.http_url, slug, "alice")
    bob = await onboard(server.http_url, slug, "bob")
    a = await HubClient(server.ws_url, alice["api_key"]).connect()
    b = await HubClient(server.ws_url, bob["api_key"]).connect()
    return alice, bob, a, b


async def test_send_and_wait_gets_the_reply(any_server: RunningHub):
    _, _, a, b = await _pair(any_server)
    try:
        waiting = asyncio.create_task(a.call("chat.send", to=["bob"], body="which port?", wait=20))
        question = await b.next_event("chat.message", where=_message_from("alice"), timeout=5)
        assert question["data"]["sender_waiting"] is True
        answer = await b.call("chat.send", session_id=question["data"]["session_id"], body="8000")
        async with asyncio.timeout(5):
            result = await waiting
        assert result["status"] == "replied"
        assert result["reply"]["body"] == "8000"
        assert result["reply"]["from_alias"] == "bob"
        assert result["reply"]["message_id"] == answer["message_id"]
        assert result["session_id"] == question["data"]["session_id"]
        # bob is online but was not waiting on the conversation.
        assert result["targets_connected"] == [] and result["targets_left"] == []
        assert [e["data"]["body"] for e in result["events"]] == ["8000"]
        assert result["waited_seconds"] < 20
    finally:
        await a.close()
        await b.close()


async def test_send_and_wait_across_two_instances(database_url, bus_prefix, redis_hub_server):
    async with running_hub(
        database_url=database_url, bus_url=REDIS_URL, bus_prefix=bus_prefix
    ) as other:
        slug = unique("proj")
        alice = await onboard(redis_hub_server.http_url, slug, "alice")
        bob = await onboard(redis_hub_server.http_url, slug, "bob")
        async with (
            HubClient(redis_hub_server.ws_url, alice["api_key"]) as a,
            HubClient(other.ws_url, bob["api_key"]) as b,
        ):
            waiting = asyncio.create_task(a.call("chat.send", to=["bob"], body="ping", wait=20))
            question = await b.next_event("chat.message", where=_message_from("alice"), timeout=5)
            await b.call("chat.send", session_id=question["data"]["session_id"], body="pong")
            async with asyncio.timeout(5):
                result = await waiting
            assert (result["status"], result["reply"]["body"]) == ("replied", "pong")


async def test_send_and_wait_times_out(join, connect):
    alice, bob = await join("alice"), await join("bob")
    a = await connect(alice)
    await connect(bob)
    async with asyncio.timeout(8):
        result = await a.call("chat.send", to=["bob"], body="anyone?", wait=1)
    assert result["status"] == "timeout" and result["reply"] is None
    assert 1 <= result["waited_seconds"] < 5
    # The wait is over: nobody is shown as waiting any more.
    pending = (await (await connect(bob)).call("chat.pending"))["pending"]
    assert [(p["sender_waiting"], p["time_remaining_seconds"]) for p in pending] == [(False, None)]


async def test_the_wait_ends_when_the_target_disconnects(join, connect):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    waiting = asyncio.create_task(a.call("chat.send", to=["bob"], body="still there?", wait=60))
    await b.next_event("chat.message", where=_message_from("alice"), timeout=5)
    await b.close()
    async with asyncio.timeout(10):
        result = await waiting
    assert result["status"] == "target_left" and result["reply"] is None
    assert result["events"][-1]["type"] == "presence"
    assert result["events"][-1]["data"]["alias"] == "bob"


async def test_a_target_leaving_with_its_answer_ends_the_wait(join, connect):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    waiting = asyncio.create_task(a.call("chat.send", to=["bob"], body="done?", wait=60))
    question = await b.next_event("chat.message", where=_message_from("alice"), timeout=5)
    sid = question["data"]["session_id"]
    await b.call("chat.send", session_id=sid, body="yes, signing off", leaving=True)
    async with asyncio.timeout(5):
        result = await waiting
    assert result["status"] == "target_left"
    assert result["reply"]["body"] == "yes, signing off" and result["reply"]["sender_leaving"]
    again = await a.call("chat.send", session_id=sid, body="one more thing")
    assert again["targets_left"] == ["bob"]


async def test_a_hang_on_with_nobody_waiting_extends_nothing(join, connect):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    asked = await a.call("chat.send", to=["bob"], body="when you can: review?")
    held = await b.call("chat.send", session_id=asked["session_id"], body="later", hang_on=True)
    # bdh prints "alice's wait extended by 1 min" from a non-zero answer.
    assert held["extends_wait_seconds"] == 0


async def test_hang_on_keeps_the_sender_waiting_past_its_deadline(join, connect):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    waiting = asyncio.create_task(a.call("chat.send", to=["bob"], body="review?", wait=2))
    question = await b.next_event("chat.message", where=_message_from("alice"), timeout=5)
    sid = question["data"]["session_id"]
    held = await b.call("chat.send", session_id=sid, body="on it, 2 min", hang_on=True)
    assert held["extends_wait_seconds"] == chat.HANG_ON_EXTENSION_SECONDS

    # Well past the original 2 s the sender is still waiting...
    done, _ = await asyncio.wait({waiting}, timeout=3.5)
    assert not done
    pending = (await b.call("chat.pending"))["pending"]
    assert pending == []  # bob's own reply marked alice's question read
    sessions = (await b.call("chat.sessions"))["sessions"]
    assert sessions[0]["sender_waiting"] is True
    assert sessions[0]["time_remaining_seconds"] > 30

    # ... and gets the real answer.
    await b.call("chat.send", session_id=sid, body="looks good")
    async with asyncio.timeout(5):
        result = await waiting
    assert (result["status"], result["reply"]["body"]) == ("replied", "looks good")
    assert [e["data"]["hang_on"] for e in result["events"]] == [True, False]


async def test_pending_shows_the_sender_waiting(join, connect):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    waiting = asyncio.create_task(a.call("chat.send", to=["bob"], body="urgent?", wait=30))
    question = await b.next_event("chat.message", where=_message_from("alice"), timeout=5)
    sid = question["data"]["session_id"]

    pending = await b.call("chat.pending")
    assert len(pending["pending"]) == 1
    item = pending["pending"][0]
    assert item["session_id"] == sid and item["participants"] == ["alice", "bob"]
    assert (item["last_message"], item["last_from"], item["unread_count"]) == (
        "urgent?",
        "alice",
        1,
    )
    assert item["sender_waiting"] is True and item["waiting"] == ["alice"]
    assert 20 < item["time_remaining_seconds"] <= 30

    # Reading extends the wait and tells the sender.
    read = await b.call("chat.read", session_id=sid)
    assert read["messages_marked"] == 1
    assert read["extends_wait_seconds"] == chat.READ_EXTENSION_SECONDS
    assert (await b.call("chat.pending"))["pending"] == []
    await b.call("chat.send", session_id=sid, body="no")
    async with asyncio.timeout(5):
        result = await waiting
    assert result["status"] == "replied"
    assert [e["type"] for e in result["events"]] == ["chat.read", "chat.message"]

    # The reply is pending for alice; nobody waits any more.
    mine = (await a.call("chat.pending"))["pending"]
    assert [(p["last_message"], p["sender_waiting"]) for p in mine] == [("no", False)]


async def test_history_and_read_receipts(join, connect):
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    a, b, _ = await connect(alice), await connect(bob), await connect(carol)
    ids = [(await a.call("chat.send", to=["bob"], body=f"m{i}"))["message_id"] for i in range(3)]
    sid = (await a.call("chat.sessions"))["sessions"][0]["session_id"]

    history = await b.call("chat.history", session_id=sid)
    assert [m["body"] for m in history["messages"]] == ["m0", "m1", "m2"]
    assert [m["read"] for m in history["messages"]] == [False, False, False]
    assert [p["alias"] for p in history["participants"]] == ["alice", "bob"]
    assert len((await b.call("chat.history", session_id=sid, unread_only=True))["messages"]) == 3
    last_two = await b.call("chat.history", session_id=sid, limit=2)
    assert [m["body"] for m in last_two["messages"]] == ["m1", "m2"] and last_two["has_more"]

    marked = await b.call("chat.read", session_id=sid, up_to_message_id=ids[1])
    assert marked["messages_marked"] == 2 and marked["extends_wait_seconds"] == 0
    receipt = await a.next_event("chat.read", timeout=2)
    assert receipt["data"]["reader_alias"] == "bob"
    assert receipt["data"]["up_to_message_id"] == ids[1]
    unread = await b.call("chat.history", session_id=sid, unread_only=True)
    assert [m["body"] for m in unread["messages"]] == ["m2"]
    again = await b.call("chat.read", session_id=sid, up_to_message_id=ids[0])
    assert again["messages_marked"] == 0

    # One conversation per set of participants, whoever opens it.
    assert (await b.call("chat.send", to=["alice"], body="hi"))["session_id"] == sid
    group = await a.call("chat.send", to=["bob", "carol"], body="all three")
    assert group["session_id"] != sid
    assert [p["alias"] for p in group["participants"]] == ["alice", "bob", "carol"]
    listed = [s["session_id"] for s in (await b.call("chat.sessions"))["sessions"]]
    assert listed == [group["session_id"], sid]


async def test_stream_yields_bdh_events_until_the_deadline(join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    sent = await a.call("chat.send", to=["bob"], body="question")
    sid = sent["session_id"]
    hub = hub_server.hub
    actor = await auth.authenticate(hub, alice["api_key"])
    events = chat.stream(hub, actor, sid, clock.now() + timedelta(seconds=3))
    try:
        async with asyncio.timeout(10):
            first = await anext(events)
            assert (first["type"], first["message_id"]) == ("message", sent["message_id"])
            assert first["from_agent"] == "alice"
            pending = (await b.call("chat.pending"))["pending"]
            assert pending[0]["sender_waiting"] is True

            await b.call("chat.read", session_id=sid)
            receipt = await anext(events)
            assert receipt["type"] == "read_receipt" and receipt["reader_alias"] == "bob"
            assert receipt["extends_wait_seconds"] == chat.READ_EXTENSION_SECONDS

            await b.call("chat.send", session_id=sid, body="answer")
            reply = await anext(events)
            assert (reply["type"], reply["from_agent"], reply["body"]) == (
                "message",
                "bob",
                "answer",
            )
    finally:
        await events.aclose()
    sessions = (await b.call("chat.sessions"))["sessions"]
    assert sessions[0]["sender_waiting"] is False

    # open_stream checks before a transport starts its response.
    carol = await auth.authenticate(hub, (await join("carol"))["api_key"])
    future = clock.now() + timedelta(seconds=3)
    for who, deadline, code in (
        (carol, future, ErrorCode.NOT_FOUND),
        (actor, clock.now() - timedelta(seconds=1), ErrorCode.INVALID_PARAMS),
    ):
        with pytest.raises(RpcError) as info:
            await chat.open_stream(hub, who, sid, deadline)
        assert info.value.code == code


async def test_bad_chat_requests_are_refused(join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    a = await connect(alice)
    await connect(bob)
    too_long = hub_server.settings.chat_max_wait_seconds + 1
    for params, code in (
        ({"to": ["bob"], "body": "x", "wait": too_long}, ErrorCode.INVALID_PARAMS),
        ({"to": ["bob"], "session_id": "x", "body": "x"}, ErrorCode.INVALID_PARAMS),
        ({"to": ["alice"], "body": "just me"}, ErrorCode.INVALID_PARAMS),
        ({"to": ["bob", "zed"], "body": "x"}, ErrorCode.NOT_FOUND),
        ({"session_id": "not-an-id", "body": "x"}, ErrorCode.INVALID_PARAMS),
        (
            {"to": ["bob"], "body": "x" * (hub_server.settings.mail_max_body_bytes + 1)},
            ErrorCode.TOO_LARGE,
        ),
    ):
        with pytest.raises(RpcError) as info:
            await a.call("chat.send", **params)
        assert info.value.code == code, params
    assert (await a.call("chat.sessions"))["sessions"] == []


async def test_the_pushed_message_is_the_stored_event_and_outsiders_write_nothing(
    join, connect, hub_server
):
    """A message into an existing conversation (by id or by ``to``) is one
    statement: the push carries exactly the stored event, and a member of
    the project who is not a participant is refused with nothing stored."""
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    sid = (await a.call("chat.send", to=["bob"], body="one"))["session_id"]
    again = await a.call("chat.send", to=["bob"], body="two", hang_on=True)
    assert again["session_id"] == sid
    pushed = await b.next_event("chat.message", where=_message_from("alice", body="two"))
    assert pushed["data"] == {
        "session_id": sid,
        "message_id": again["message_id"],
        "from_agent_id": alice["agent_id"],
        "from_alias": "alice",
        "body": "two",
        "timestamp": again["timestamp"],
        "sender_leaving": False,
        "sender_waiting": False,
        "hang_on": True,
        "extends_wait_seconds": chat.HANG_ON_EXTENSION_SECONDS,
        "participants": ["alice", "bob"],
    }
    stored = await events.since(hub_server.hub, alice["project_id"], bob["agent_id"], 0)
    (event,) = [e for e in stored if e.id == pushed["id"]]
    assert event.wire() == {k: pushed[k] for k in event.wire()}
    assert event.recipients == [alice["agent_id"], bob["agent_id"]]

    with pytest.raises(RpcError) as info:
        await c.call("chat.send", session_id=sid, body="let me in")
    assert info.value.code == ErrorCode.NOT_FOUND
    history = await b.call("chat.history", session_id=sid)
    assert [m["body"] for m in history["messages"]] == ["one", "two"]
    stored = await events.since(hub_server.hub, alice["project_id"], None, 0)
    assert "let me in" not in [e.data.get("body") for e in stored]


async def test_chat_never_crosses_projects(hub_server, connect):
    mine = await onboard(hub_server.http_url, unique("proj"), "alice")
    await onboard(hub_server.http_url, mine["project_slug"], "bob")
    theirs = await onboard(hub_server.http_url, unique("proj"), "mallory")
    a, m = await connect(mine), await connect(theirs)
    with pytest.raises(RpcError) as info:
        await m.call("chat.send", to=["alice"], body="hi")
    assert info.value.code == ErrorCode.NOT_FOUND

    sid = (await a.call("chat.send", to=["bob"], body="private"))["session_id"]
    for method, params in (
        ("chat.send", {"session_id": sid, "body": "let me in"}),
        ("chat.history", {"session_id": sid}),
        ("chat.read", {"session_id": sid}),
    ):
        with pytest.raises(RpcError) as info:
            await m.call(method, **params)
        assert info.value.code == ErrorCode.NOT_FOUND
    assert (await m.call("chat.sessions"))["sessions"] == []
    assert all(not e["type"].startswith("chat") for e in m.pending_events())


async def test_a_sender_that_disconnects_stops_waiting(join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    a = HubClient(hub_server.ws_url, alice["api_key"], reconnect=False)
    await a.connect()
    b = await connect(bob)
    asyncio.create_task(a.call("chat.send", to=["bob"], body="hello?", wait=60))  # noqa: RUF006
    await b.next_event("chat.message", where=_message_from("alice"), timeout=5)
    assert (await b.call("chat.pending"))["pending"][0]["sender_waiting"] is True
    await a.close()
    await b.next_event("presence", where=lambda e: e["data"]["alias"] == "alice", timeout=5)
    # The wait is cleared as the cancelled call unwinds, just after the close.
    for _ in range(100):
        if not (await b.call("chat.pending"))["pending"][0]["sender_waiting"]:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("alice is still shown as waiting after she disconnected")


async def test_a_reply_the_bus_dropped_still_ends_the_wait(database_url):
    """Fault injection on a private hub: bob's reply is committed but its
    event never reaches the relay's listeners (as when Redis restarts between
    the commit and the publish). When the bus then reports the gap, the
    waiting sender reads the reply from the store."""
    import asyncio

    from hub.bus.relay import gap_signal
    from hub.services import events
    from protocol.client import HubClient
    from tests.support import onboard, running_hub, unique

    async with running_hub(database_url=database_url) as server:
        slug = unique("proj")
        alice = await onboard(server.http_url, slug, "alice")
        bob = await onboard(server.http_url, slug, "bob")
        async with (
            HubClient(server.ws_url, alice["api_key"]) as a,
            HubClient(server.ws_url, bob["api_key"]) as b,
        ):
            waiting = asyncio.create_task(a.call("chat.send", to=["bob"], body="ping?", wait=20))
            question = await b.next_event("chat.message")
            relay = server.hub.relay
            relay.deliver = lambda channel, message: None  # the bus loses what follows
            try:
                await b.call("chat.send", session_id=question["data"]["session_id"], body="pong")
            finally:
                del relay.deliver
            assert not waiting.done()
            relay.on_bus_message(events.channel(alice["project_id"]), gap_signal(5.0))
            answer = await asyncio.wait_for(waiting, timeout=5)
    assert answer["status"] == "replied"
    assert answer["reply"]["body"] == "pong"
