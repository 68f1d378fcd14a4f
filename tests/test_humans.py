"""Humans as mail and chat parties, over real sockets and the HTTP shim:
agents address human:<name>, a human reads its inbox with unread counts,
chats with an agent (send-and-wait ends on the human's reply), and the
team lead's views (every conversation, who waits on whom) refuse agents."""

from __future__ import annotations

import asyncio

import pytest

from protocol.errors import ErrorCode, RpcError
from tests.support import human_ticket, onboard, unique


@pytest.fixture
async def human(hub_server, connect):
    """``await human(agent)``: the dashboard session of that agent's human."""

    async def _human(agent):
        ticket = await human_ticket(hub_server.http_url, agent)
        return await connect({"api_key": None}, ticket=ticket)

    return _human


async def test_an_agent_mails_a_human_who_reads_and_acks_it(join, connect, human):
    alice = await join("alice", human_name="Ana")
    bob = await join("bob")
    ana = await human(alice)
    b = await connect(bob)

    sent = await b.call("mail.send", to=["human:Ana"], subject="need a call", body="the schema?")
    assert sent["to"] == ["human:Ana"] and sent["recipients"] == 1
    event = await ana.next_event(
        "mail", where=lambda e: e["data"]["message_id"] == sent["message_id"]
    )
    assert event["data"]["to"] == ["human:Ana"]
    inbox = await ana.call("mail.inbox", unread_only=True)
    assert [m["message_id"] for m in inbox["messages"]] == [sent["message_id"]]
    assert inbox["unread_count"] == 1

    await ana.call("mail.ack", message_ids=[sent["message_id"]])
    assert (await ana.call("mail.inbox"))["unread_count"] == 0
    # The sender sees the delivery state of its message.
    thread = await b.call("mail.thread", thread_id=sent["thread_id"])
    [delivery] = thread["messages"][0]["deliveries"]
    assert delivery["alias"] == "human:Ana" and delivery["read_at"] is not None


async def test_a_human_is_addressed_over_the_shim_by_alias_or_name(join, agent, human):
    alice = await join("alice", human_name="Ana")
    ana = await human(alice)
    bob = await agent("bob")
    # The aw library posts one to_alias: human:Ana, or the human's bare name.
    for to in ("human:Ana", "Ana"):
        sent = await bob.post("/v1/messages", {"to_alias": to, "subject": "s", "body": to})
        assert sent.status_code == 200, sent.text
    inbox = await ana.call("mail.inbox")
    assert [m["body"] for m in inbox["messages"]] == ["Ana", "human:Ana"]
    assert inbox["unread_count"] == 2
    # bdh opens a chat with the human the same way.
    opened = await bob.post(
        "/v1/chat/sessions", {"to_aliases": ["human:Ana"], "message": "over http"}
    )
    assert opened.status_code == 200, opened.text
    assert (await ana.call("chat.pending"))["unread_messages"] == 1


async def test_unknown_humans_are_not_found_and_nothing_is_sent(join, connect, human):
    alice = await join("alice", human_name="Ana")
    bob = await connect(await join("bob"))
    with pytest.raises(RpcError) as info:
        await bob.call("mail.send", to=["human:Nobody", "alice"], body="x")
    assert info.value.code == ErrorCode.NOT_FOUND
    assert info.value.data["missing"] == ["human:Nobody"]
    assert (await (await human(alice)).call("mail.inbox"))["messages"] == []


async def test_mail_to_everyone_reaches_agents_not_human_inboxes(join, connect, human):
    alice = await join("alice", human_name="Ana")
    ana = await human(alice)
    await ana.call("mail.inbox")  # Ana's inbox exists now
    b = await connect(await join("bob"))
    sent = await b.call("mail.send", to_all=True, body="standup")
    assert sent["to"] == ["alice"]
    assert (await ana.call("mail.inbox"))["messages"] == []
    # ... and the team listing does not show the human's inbox as an agent.
    agents = (await b.call("presence.list"))["agents"]
    assert sorted(a["alias"] for a in agents) == ["alice", "bob"]


async def test_a_human_chats_with_an_agent_that_waits_for_the_answer(join, connect, human):
    alice = await join("alice", human_name="Ana")
    ana = await human(alice)
    bob = await connect(await join("bob"))

    opened = await ana.call("chat.send", to=["bob"], body="are you stuck?")
    event = await bob.next_event("chat.message")
    assert event["data"]["from_alias"] == "human:Ana"
    assert sorted(event["data"]["participants"]) == ["bob", "human:Ana"]

    waiting = asyncio.create_task(
        bob.call("chat.send", session_id=opened["session_id"], body="yes: which schema?", wait=30)
    )
    asked = await ana.next_event("chat.message", where=lambda e: e["data"]["from_alias"] == "bob")
    assert asked["data"]["sender_waiting"] is True
    # The lead sees bob waiting on Ana.
    blocked = (await ana.call("team.waiting"))["waiting"]
    assert [(w["kind"], w["alias"], w["waiting_on"]) for w in blocked] == [
        ("chat", "bob", ["human:Ana"])
    ]
    await ana.call("chat.send", session_id=opened["session_id"], body="the v2 one")
    answer = await asyncio.wait_for(waiting, 10)
    assert answer["status"] == "replied" and answer["reply"]["body"] == "the v2 one"
    history = await ana.call("chat.history", session_id=opened["session_id"])
    assert [m["body"] for m in history["messages"]] == [
        "are you stuck?",
        "yes: which schema?",
        "the v2 one",
    ]


async def test_an_agent_opens_a_chat_with_a_human(join, connect, human):
    alice = await join("alice", human_name="Ana")
    b = await connect(await join("bob"))
    sent = await b.call("chat.send", to=["human:Ana"], body="quick question")
    ana = await human(alice)
    pending = await ana.call("chat.pending")
    assert [p["session_id"] for p in pending["pending"]] == [sent["session_id"]]
    assert pending["unread_messages"] == 1


async def test_the_lead_reads_every_conversation(join, connect, human):
    alice = await join("alice", human_name="Ana")
    b = await connect(await join("bob"))
    await join("carol")
    sent = await b.call("chat.send", to=["carol"], body="agents only")
    ana = await human(alice)
    sessions = (await ana.call("chat.all"))["sessions"]
    assert [(s["session_id"], s["participants"], s["message_count"]) for s in sessions] == [
        (sent["session_id"], ["bob", "carol"], 1)
    ]
    history = await ana.call("chat.history", session_id=sent["session_id"])
    assert [m["body"] for m in history["messages"]] == ["agents only"]


@pytest.mark.parametrize("method", ["chat.all", "team.waiting", "team.stale", "webhooks.list"])
async def test_the_lead_views_refuse_an_agent(join, connect, method):
    b = await connect(await join("bob", role="coordinator"))
    with pytest.raises(RpcError) as info:
        await b.call(method)
    assert info.value.code == ErrorCode.FORBIDDEN


async def test_another_projects_human_sees_none_of_it(join, connect, human, hub_server):
    alice = await join("alice", human_name="Ana")
    b = await connect(await join("bob"))
    sent = await b.call("chat.send", to=["alice"], body="private")
    other = await onboard(hub_server.http_url, unique("other"), "eve", human_name="Ana")
    eve_human = await human(other)
    assert (await eve_human.call("chat.all"))["sessions"] == []
    with pytest.raises(RpcError) as info:
        await eve_human.call("chat.history", session_id=sent["session_id"])
    assert info.value.code == ErrorCode.NOT_FOUND
    # Ana of the other project is another human: bob's mail to Ana stays here.
    await b.call("mail.send", to=["human:Ana"], body="for our Ana")
    assert (await eve_human.call("mail.inbox"))["messages"] == []
    assert alice["project_id"] != other["project_id"]
