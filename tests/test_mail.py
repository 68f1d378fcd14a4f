"""Mail over real sockets: send to one, several or everyone; inbox filters
and paging; ack by the recipient only; threads; events reach exactly the
recipients; bad sends change nothing."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.support import onboard, sign_in_human, unique


async def _no_event_of(client: HubClient, type: str) -> bool:
    """True when ``type`` never reached this client. Events are queued on a
    socket before any later response, so after a round trip anything sent
    earlier has arrived."""
    await client.call("session.ping")
    return all(e["type"] != type for e in client.pending_events())


async def _inbox_ids(client: HubClient, **params) -> list[str]:
    inbox = await client.call("mail.inbox", **params)
    return [m["message_id"] for m in inbox["messages"]]


async def test_mail_to_one_agent_reaches_only_that_agent_at_once(join, connect):
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    a, b, c = await connect(alice), await connect(bob), await connect(carol)

    sent = await a.call(
        "mail.send", to=["bob"], subject="API ready", body="bd-12 is merged", priority="high"
    )
    assert sent["status"] == "delivered" and sent["to"] == ["bob"]

    event = await b.next_event("mail", timeout=2)
    assert event["data"]["message_id"] == sent["message_id"]
    assert (event["data"]["from_alias"], event["data"]["subject"], event["data"]["body"]) == (
        "alice",
        "API ready",
        "bd-12 is merged",
    )
    assert await _no_event_of(c, "mail")
    assert await _no_event_of(a, "mail")

    inbox = await b.call("mail.inbox")
    assert inbox["count"] == 1 and inbox["has_more"] is False
    message = inbox["messages"][0]
    assert message["from_alias"] == "alice" and message["from_agent_id"] == alice["agent_id"]
    assert (message["priority"], message["read"], message["read_at"]) == ("high", False, None)
    assert message["thread_id"] == sent["message_id"]
    assert (await c.call("mail.inbox"))["messages"] == []
    assert (await a.call("mail.inbox"))["messages"] == []


async def test_mail_to_several_and_to_everyone(join, connect):
    agents = {name: await join(name) for name in ("alice", "bob", "carol", "dave")}
    clients = {name: await connect(agent) for name, agent in agents.items()}
    a = clients["alice"]

    several = await a.call("mail.send", to=["bob", "carol"], subject="s", body="to two")
    assert several["to"] == ["bob", "carol"] and several["recipients"] == 2
    for name in ("bob", "carol"):
        event = await clients[name].next_event("mail", timeout=2)
        assert event["data"]["message_id"] == several["message_id"]
    assert await _no_event_of(clients["dave"], "mail")

    everyone = await a.call("mail.send", to_all=True, subject="standup", body="to all")
    assert everyone["to"] == ["bob", "carol", "dave"]
    for name in ("bob", "carol", "dave"):
        event = await clients[name].next_event(
            "mail", where=lambda e: e["data"]["message_id"] == everyone["message_id"], timeout=2
        )
        assert event["data"]["to_all"] is True
    assert await _no_event_of(a, "mail")

    assert await _inbox_ids(clients["bob"]) == [everyone["message_id"], several["message_id"]]
    assert await _inbox_ids(clients["dave"]) == [everyone["message_id"]]
    assert await _inbox_ids(a) == []


async def test_inbox_filters_unread_and_sender_and_pages(join, connect):
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    from_alice = [
        (await a.call("mail.send", to=["bob"], body=f"a{i}"))["message_id"] for i in range(5)
    ]
    from_carol = [
        (await c.call("mail.send", to=["bob"], body=f"c{i}"))["message_id"] for i in range(2)
    ]
    newest_first = list(reversed(from_alice + from_carol))

    page1 = await b.call("mail.inbox", limit=3)
    assert [m["message_id"] for m in page1["messages"]] == newest_first[:3]
    assert page1["has_more"] is True and page1["next_before"] == newest_first[2]
    page2 = await b.call("mail.inbox", limit=3, before=page1["next_before"])
    assert [m["message_id"] for m in page2["messages"]] == newest_first[3:6]
    page3 = await b.call("mail.inbox", limit=3, before=page2["next_before"])
    assert [m["message_id"] for m in page3["messages"]] == newest_first[6:]
    assert page3["has_more"] is False and page3["next_before"] is None
    assert await _inbox_ids(b, limit=2, offset=4) == newest_first[4:6]

    assert await _inbox_ids(b, from_alias="carol") == list(reversed(from_carol))
    assert await _inbox_ids(b, from_alias="nobody") == []

    await b.call("mail.ack", message_ids=from_alice[:2])
    unread = await _inbox_ids(b, unread_only=True)
    assert unread == list(reversed(from_alice[2:] + from_carol))
    assert await _inbox_ids(b, unread_only=True, from_alias="alice") == list(
        reversed(from_alice[2:])
    )
    everything = await b.call("mail.inbox")
    assert {m["message_id"]: m["read"] for m in everything["messages"]} == {
        **{m: True for m in from_alice[:2]},
        **{m: False for m in from_alice[2:] + from_carol},
    }


async def test_only_the_recipient_can_ack_its_copy(join, connect):
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    first = (await a.call("mail.send", to=["bob", "carol"], body="one"))["message_id"]
    second = (await a.call("mail.send", to=["bob"], body="two"))["message_id"]

    for intruder in (a, c):
        with pytest.raises(RpcError) as info:
            await intruder.call("mail.ack", message_ids=[second])
        assert info.value.code == ErrorCode.NOT_FOUND
        assert second in info.value.message
    # One foreign id in the batch: nothing is acked at all.
    with pytest.raises(RpcError):
        await c.call("mail.ack", message_ids=[first, second])
    assert [m["read"] for m in (await c.call("mail.inbox"))["messages"]] == [False]
    assert [m["read"] for m in (await b.call("mail.inbox"))["messages"]] == [False, False]

    acked = await b.call("mail.ack", message_ids=[second])
    assert acked["count"] == 1 and acked["acknowledged"][0]["message_id"] == second
    read = await a.next_event("mail.read", timeout=2)
    assert read["data"]["reader_alias"] == "bob"
    again = await b.call("mail.ack", message_ids=[second])
    assert (
        again["acknowledged"][0]["acknowledged_at"] == acked["acknowledged"][0]["acknowledged_at"]
    )
    bob_inbox = {m["message_id"]: m["read"] for m in (await b.call("mail.inbox"))["messages"]}
    assert bob_inbox == {first: False, second: True}
    # Bob's ack is his copy only: carol's copy of the shared message stays unread.
    await b.call("mail.ack", message_ids=[first])
    assert [m["read"] for m in (await c.call("mail.inbox"))["messages"]] == [False]


async def test_a_thread_collects_replies_for_its_participants(join, connect):
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    start = await a.call("mail.send", to=["bob"], subject="schema?", body="which table?")
    thread_id = start["thread_id"]
    assert thread_id == start["message_id"]
    reply = await b.call(
        "mail.send", to=["alice"], subject="re", body="agents", thread_id=thread_id
    )
    assert reply["thread_id"] == thread_id
    await a.call("mail.send", to=["bob"], body="thanks", thread_id=thread_id)
    await a.call("mail.send", to=["bob"], body="unrelated")

    view = await b.call("mail.thread", thread_id=thread_id)
    assert [m["body"] for m in view["messages"]] == ["which table?", "agents", "thanks"]
    assert [m["from_alias"] for m in view["messages"]] == ["alice", "bob", "alice"]
    assert view["messages"][1]["to"] == ["alice"] and view["subject"] == "schema?"
    assert view["count"] == 3

    with pytest.raises(RpcError) as info:
        await c.call("mail.thread", thread_id=thread_id)
    assert info.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(RpcError) as info:
        await a.call("mail.send", to=["bob"], body="x", thread_id=str(uuid.uuid4()))
    assert info.value.code == ErrorCode.NOT_FOUND


async def test_unknown_alias_and_oversize_body_fail_and_write_nothing(join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)

    with pytest.raises(RpcError) as info:
        await a.call("mail.send", to=["bob", "zed"], body="hello")
    assert info.value.code == ErrorCode.NOT_FOUND
    assert "zed" in info.value.message and info.value.data["missing"] == ["zed"]

    limit = hub_server.settings.mail_max_body_bytes
    with pytest.raises(RpcError) as info:
        await a.call("mail.send", to=["bob"], body="x" * (limit + 1))
    assert info.value.code == ErrorCode.TOO_LARGE

    for bad in (
        {"to": ["bob"], "to_all": True, "body": "both"},
        {"body": "nobody"},
        {"to": ["bob"], "body": "x", "priority": "whenever"},
        {"to": ["bob"], "body": "x", "subject": "s" * 201},
    ):
        with pytest.raises(RpcError) as info:
            await a.call("mail.send", **bad)
        assert info.value.code == ErrorCode.INVALID_PARAMS

    assert await _inbox_ids(b) == []
    assert await _no_event_of(b, "mail")
    ok = await a.call("mail.send", to=["bob"], body="x" * limit)
    assert await _inbox_ids(b) == [ok["message_id"]]


async def test_a_human_on_the_dashboard_can_send_mail(join, connect, hub_server):
    alice = await join("alice", human_name="juan")
    bob = await join("bob")
    b = await connect(bob)
    signed_in = await sign_in_human(hub_server, alice["project_slug"])
    human = await connect({"api_key": None}, ticket=signed_in["ticket"])

    sent = await human.call("mail.send", to=["bob"], subject="review", body="please look")
    event = await b.next_event("mail", timeout=2)
    assert event["data"]["from_alias"] == "human:juan"
    assert event["data"]["from_agent_id"] is None
    message = (await b.call("mail.inbox"))["messages"][0]
    assert message["message_id"] == sent["message_id"]
    assert (message["from_alias"], message["from_agent_id"]) == ("human:juan", None)
    # The human's own inbox (tests/test_humans.py) holds nothing it sent.
    assert (await human.call("mail.inbox"))["messages"] == []


async def test_twenty_agents_mailing_one_recipient_at_once(join, connect):
    names = [f"sender{i:02d}" for i in range(20)]
    inbox_owner = await join("boss")
    senders = [await join(name) for name in names]
    boss = await connect(inbox_owner)
    clients = await asyncio.gather(*(connect(s) for s in senders))

    results = await asyncio.gather(
        *(
            client.call("mail.send", to=["boss"], subject=name, body=f"report from {name}")
            for client, name in zip(clients, names, strict=True)
        )
    )
    sent_ids = {r["message_id"] for r in results}
    assert len(sent_ids) == 20

    seen: list[str] = []
    async with asyncio.timeout(10):
        while len(seen) < 20:
            seen.append((await boss.next_event("mail"))["data"]["message_id"])
    assert sorted(seen) == sorted(sent_ids)
    assert await _no_event_of(boss, "mail")

    inbox = await boss.call("mail.inbox", limit=100)
    assert inbox["count"] == 20
    assert sorted(m["message_id"] for m in inbox["messages"]) == sorted(sent_ids)
    assert sorted(m["from_alias"] for m in inbox["messages"]) == names


async def test_mail_never_crosses_projects(hub_server, connect):
    mine = await onboard(hub_server.http_url, unique("proj"), "alice")
    bob = await onboard(hub_server.http_url, mine["project_slug"], "bob")
    theirs = await onboard(hub_server.http_url, unique("proj"), "mallory")
    a, b, m = await connect(mine), await connect(bob), await connect(theirs)

    with pytest.raises(RpcError) as info:
        await m.call("mail.send", to=["alice"], body="hi from elsewhere")
    assert info.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(RpcError):
        await m.call("mail.send", to_all=True, body="anyone?")

    sent = await a.call("mail.send", to=["bob"], body="internal")
    await b.next_event("mail", timeout=2)
    for method, params in (
        ("mail.ack", {"message_ids": [sent["message_id"]]}),
        ("mail.thread", {"thread_id": sent["thread_id"]}),
        ("mail.send", {"to": ["mallory"], "body": "x", "thread_id": sent["thread_id"]}),
    ):
        with pytest.raises(RpcError) as info:
            await m.call(method, **params)
        assert info.value.code == ErrorCode.NOT_FOUND
    assert await _no_event_of(m, "mail")
    assert (await m.call("mail.inbox"))["messages"] == []


async def test_concurrent_sends_batched_together_keep_their_own_outcomes(join, connect, hub_server):
    """Sends that arrive together are written by one statement; each still
    gets its own answer: good ones delivered once, a missing alias or thread
    NOT_FOUND, and only the good ones stored and announced."""
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    a, b = await connect(alice), await connect(bob)
    first = await a.call("mail.send", to=["bob"], subject="start", body="thread")
    b.pending_events()
    store = hub_server.hub.store
    stored_before = await store.fetchval(
        "SELECT count(*) FROM mail_messages WHERE project_id = $1", alice["project_id"]
    )

    def send(k: int):
        kind = k % 5
        if kind == 0:
            return a.call("mail.send", to=["nobody"], body=f"m{k}")
        if kind == 1:
            return a.call("mail.send", to=["bob"], body=f"m{k}", thread_id=str(uuid.uuid4()))
        if kind == 2:
            return a.call("mail.send", to=["bob"], body=f"m{k}", thread_id=first["thread_id"])
        if kind == 3:
            return a.call("mail.send", to=["bob", "carol"], body=f"m{k}")
        return a.call("mail.send", to_all=True, body=f"m{k}")

    results = await asyncio.gather(*(send(k) for k in range(40)), return_exceptions=True)
    for k, result in enumerate(results):
        if k % 5 in (0, 1):
            assert isinstance(result, RpcError) and result.code == ErrorCode.NOT_FOUND, result
        else:
            assert result["status"] == "delivered"
    assert results[2]["thread_id"] == first["thread_id"]
    assert results[3]["to"] == ["bob", "carol"]
    assert results[4]["to"] == ["bob", "carol"] and results[4]["recipients"] == 2
    good = [r for r in results if isinstance(r, dict)]
    stored = await store.fetchval(
        "SELECT count(*) FROM mail_messages WHERE project_id = $1", alice["project_id"]
    )
    assert stored - stored_before == len(good) == 24
    commits = await store.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM mail_messages WHERE project_id = $1",
        alice["project_id"],
    )
    assert commits < 1 + len(good)  # grouped: fewer commits than messages
    # bob got each good message once, in its own event, with the stored body.
    got = {}
    while len(got) < len(good):
        event = await b.next_event("mail", timeout=5)
        assert event["data"]["message_id"] not in got
        got[event["data"]["message_id"]] = event["data"]["body"]
    assert got == {r["message_id"]: f"m{results.index(r)}" for r in good}
    carol_inbox = await (await connect(carol)).call("mail.inbox")
    assert carol_inbox["count"] == 16


# -- retry-safe sends: the key is claimed in the send's own statement ------------------


async def test_a_keyed_send_refused_for_its_recipients_keeps_no_key(join, connect):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    for _ in range(2):  # an error is not stored: the repeat is refused again, not replayed
        with pytest.raises(RpcError) as info:
            await a.call("mail.send", to=["nobody"], body="x", idempotency_key="k-refused")
        assert info.value.code == ErrorCode.NOT_FOUND
    # Nothing claimed the key, so it may carry another request now.
    sent = await a.call("mail.send", to=["bob"], body="y", idempotency_key="k-refused")
    assert await _inbox_ids(b) == [sent["message_id"]]


async def test_concurrent_keyed_sends_are_each_written_once(join, connect):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    keys = [f"k-many-{i}" for i in range(40)]
    first = await asyncio.gather(
        *(a.call("mail.send", to=["bob"], body=k, idempotency_key=k) for k in keys)
    )
    again = await asyncio.gather(
        *(a.call("mail.send", to=["bob"], body=k, idempotency_key=k) for k in keys)
    )
    assert again == first
    inbox = await b.call("mail.inbox", limit=100)
    assert sorted(m["body"] for m in inbox["messages"]) == sorted(keys)


async def test_a_keyed_send_to_a_human_by_name_is_replayed_not_resent(join, connect, hub_server):
    alice = await join("alice", human_name="Ana")
    a = await connect(alice)
    signed_in = await sign_in_human(hub_server, alice["project_slug"], "Ana")
    ana = await connect({"api_key": None}, ticket=signed_in["ticket"])
    await ana.call("mail.inbox")  # Ana's inbox exists now
    first = await a.call("mail.send", to=["Ana"], body="look", idempotency_key="k-human")
    again = await a.call("mail.send", to=["Ana"], body="look", idempotency_key="k-human")
    assert again == first
    assert [m["body"] for m in (await ana.call("mail.inbox"))["messages"]] == ["look"]


async def test_a_key_older_than_a_day_sends_again(join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    a, b = await connect(alice), await connect(bob)
    first = await a.call("mail.send", to=["bob"], body="daily", idempotency_key="k-day")
    await hub_server.hub.store.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = $1",
        "k-day",
    )
    second = await a.call("mail.send", to=["bob"], body="daily", idempotency_key="k-day")
    assert second["message_id"] != first["message_id"]
    assert len(await _inbox_ids(b)) == 2
    assert await a.call("mail.send", to=["bob"], body="daily", idempotency_key="k-day") == second
