"""activity.recent: the project's newest events, for the dashboard's feeds."""

from __future__ import annotations

import pytest

from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.support import onboard, sign_in_human, unique


async def human(hub_server, project_slug: str) -> HubClient:
    signed_in = await sign_in_human(hub_server, project_slug)
    return await HubClient(hub_server.ws_url, ticket=signed_in["ticket"]).connect()


async def test_a_human_reads_the_newest_mail_and_chat_oldest_first(join, connect, hub_server):
    alice, bob = await join("alice"), await join("bob")
    a, _ = await connect(alice), await connect(bob)
    for n in range(3):
        await a.call("mail.send", to=["bob"], subject=f"note {n}", body="...")
    await a.call("chat.send", to=["bob"], body="ping")
    await a.call("presence.update", focus="noise")
    dashboard = await human(hub_server, alice["project_slug"])
    try:
        result = await dashboard.call("activity.recent", types=["mail", "chat.message"], limit=3)
        assert [e["type"] for e in result["events"]] == ["mail", "mail", "chat.message"]
        assert [e["data"].get("subject") for e in result["events"][:2]] == ["note 1", "note 2"]
        cursors = [int(e["cursor"]) for e in result["events"]]
        assert cursors == sorted(cursors)
        # The cursor is the project's latest, past the presence update too.
        assert int(result["cursor"]) > cursors[-1]

        older = await dashboard.call("activity.recent", types=["mail"], before=cursors[0])
        assert [e["data"]["subject"] for e in older["events"]] == ["note 0"]
    finally:
        await dashboard.close()


async def test_an_agent_sees_only_what_was_addressed_to_it(join, connect):
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    a, c = await connect(alice), await connect(carol)
    await a.call("mail.send", to=["bob"], subject="for bob only", body="...")
    await a.call("mail.send", to=["carol"], subject="for carol", body="...")
    seen = await c.call("activity.recent", types=["mail"])
    assert [e["data"]["subject"] for e in seen["events"]] == ["for carol"]
    assert bob  # bob's copy is not carol's business


async def test_one_agents_timeline(join, connect, hub_server):
    alice, bob, carol = await join("alice"), await join("bob"), await join("carol")
    a, b = await connect(alice), await connect(bob)
    await b.call("presence.update", focus="bob's work")
    await a.call("presence.update", focus="alice's work")
    await a.call("mail.send", to=["bob"], subject="to bob", body="...")
    await a.call("mail.send", to=["carol"], subject="to carol", body="...")
    dashboard = await human(hub_server, alice["project_slug"])
    try:
        timeline = await dashboard.call("activity.recent", agent_id=bob["agent_id"])
    finally:
        await dashboard.close()
    described = [
        e["data"].get("focus") or e["data"].get("subject") or e["type"] for e in timeline["events"]
    ]
    assert "bob's work" in described and "to bob" in described
    assert "alice's work" not in described and "to carol" not in described
    assert carol


async def test_other_projects_never_show(join, connect, hub_server):
    alice = await join("alice")
    other = await onboard(hub_server.http_url, unique("other"), "mallory")
    m = await connect(other)
    await m.call("presence.update", focus="secret plans")
    a = await connect(alice)
    found = await a.call("activity.recent", limit=500)
    assert all(e["project_id"] == alice["project_id"] for e in found["events"])
    assert "secret plans" not in repr(found)


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 501}, {"agent_id": "bob"}, {"types": []}, {"since": 1}],
)
async def test_bad_params_are_refused(join, connect, params):
    a = await connect(await join("alice"))
    with pytest.raises(RpcError) as raised:
        await a.call("activity.recent", params)
    assert raised.value.code == ErrorCode.INVALID_PARAMS
