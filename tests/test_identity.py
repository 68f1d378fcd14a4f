"""Identity and authority: nobody joins or becomes an agent without consent,
humans hold credentials no agent key can mint, roles are granted, keys are
managed, and revocation reaches what is already open."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from hub.config import Settings
from hub.services import admission, tickets
from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.shim import bdh_init_body
from tests.support import RunningHub, grant_coordinator, onboard, sign_in_human, unique

#: Revocation must reach an open session within this (the issue's bound).
CLOSED_WITHIN = 2.0


async def rpc_error(awaitable: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        await awaitable
    return info.value


async def post(server: RunningHub, path: str, body: Any = None, credential: str = "") -> Any:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        return await http.post(path, json=body, headers=headers)


async def human_client(server: RunningHub, slug: str, name: str = "juan") -> HubClient:
    signed_in = await sign_in_human(server, slug, name)
    return await HubClient(server.ws_url, ticket=signed_in["ticket"], reconnect=False).connect()


# -- join consent -------------------------------------------------------------------


def test_the_default_join_policy_follows_where_the_hub_listens():
    assert admission.default_policy(Settings(host="127.0.0.1")) == "open"
    assert admission.default_policy(Settings(host="::1")) == "open"
    assert admission.default_policy(Settings(host="localhost")) == "open"
    assert admission.default_policy(Settings(host="0.0.0.0")) == "approval"
    assert admission.default_policy(Settings(host="10.1.2.3")) == "approval"
    assert admission.default_policy(Settings(host="0.0.0.0", join_policy="open")) == "open"


async def test_an_unknown_agent_waits_for_a_human_then_the_same_init_succeeds(
    hub_server: RunningHub, join, slug
):
    await join("alice")
    bob = await join("bob")
    human = await human_client(hub_server, slug)
    try:
        assert (await human.call("join.policy.set", join_policy="approval"))[
            "join_policy"
        ] == "approval"
        body = bdh_init_body(slug, "newcomer")
        first = await post(hub_server, "/v1/init", body)
        # bdh reads this substring, prints its validation text and exits 0.
        assert first.status_code == 403 and "pending_validation" in first.text, first.text
        request_id = first.json()["data"]["request_id"]
        again = await post(hub_server, "/v1/init", body)
        assert "pending_validation" in again.text
        assert again.json()["data"]["request_id"] == request_id  # one request, not two

        seen = await human.next_event("join.requested", timeout=5)
        assert seen["data"]["request_id"] == request_id
        assert seen["data"]["alias"] == "newcomer"
        listed = (await human.call("join.requests"))["requests"]
        assert [(r["request_id"], r["status"]) for r in listed] == [(request_id, "pending")]

        # An agent of the project cannot admit anyone.
        async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
            refused = await rpc_error(b.call("join.admit", request_id=request_id))
            assert refused.code == ErrorCode.FORBIDDEN
        admitted = await human.call("join.admit", request_id=request_id)
        assert admitted["status"] == "admitted"

        joined = await post(hub_server, "/v1/init", body)
        assert joined.status_code == 200, joined.text
        assert joined.json()["alias"] == "newcomer" and joined.json()["created"]
        # Admission is spent: the same report again is a takeover attempt.
        assert "alias_exists" in (await post(hub_server, "/v1/init", body)).text
        trail = (await human.call("audit.list"))["entries"]
        assert [e["action"] for e in trail][:2] == ["join.admit", "join.policy.set"]
    finally:
        await human.close()


async def test_an_init_without_an_alias_keeps_the_alias_it_was_shown(hub_server, slug):
    await onboard(hub_server.http_url, slug, "alice")
    human = await human_client(hub_server, slug)
    try:
        await human.call("join.policy.set", join_policy="approval")
        body = bdh_init_body(slug, "x", role="backend")
        del body["alias"]
        pending = await post(hub_server, "/v1/init", body)
        data = pending.json()["data"]
        assert data["alias"] == "bob-backend"  # alice is taken, whatever the role
        await human.call("join.admit", request_id=data["request_id"])
        joined = await post(hub_server, "/v1/init", body)
        assert joined.status_code == 200 and joined.json()["alias"] == "bob-backend"
    finally:
        await human.close()


async def test_a_refused_agent_stays_out(hub_server, slug):
    await onboard(hub_server.http_url, slug, "alice")
    human = await human_client(hub_server, slug)
    try:
        await human.call("join.policy.set", join_policy="approval")
        body = bdh_init_body(slug, "pushy")
        request_id = (await post(hub_server, "/v1/init", body)).json()["data"]["request_id"]
        assert (await human.call("join.refuse", request_id=request_id))["status"] == "refused"
        again = await post(hub_server, "/v1/init", body)
        assert again.status_code == 403 and "join_refused" in again.text
        twice = await rpc_error(human.call("join.admit", request_id=request_id))
        assert twice.code == ErrorCode.CONFLICT
    finally:
        await human.close()


async def test_an_invitation_admits_at_once_and_only_as_often_as_it_says(hub_server, slug):
    await onboard(hub_server.http_url, slug, "alice")
    human = await human_client(hub_server, slug)
    try:
        await human.call("join.policy.set", join_policy="approval")
        invitation = (await human.call("invitations.create", uses=1))["invitation"]
        first = await post(hub_server, "/v1/init", bdh_init_body(slug, "guest"), invitation)
        assert first.status_code == 200, first.text
        # The same token in the body works the same way; this one is used up.
        spent = await post(
            hub_server, "/v1/init", {**bdh_init_body(slug, "guest2"), "invitation": invitation}
        )
        assert spent.status_code == 403 and "invitation" in spent.text
    finally:
        await human.close()


# -- binding an existing alias ---------------------------------------------------------


async def test_nobody_takes_over_an_alias_without_its_key_or_a_human(hub_server, join, slug):
    alice = await join("alice")
    async with HubClient(hub_server.ws_url, alice["api_key"]) as victim:
        # What any member can read about alice: her hostname and path.
        listed = (await victim.call("presence.list"))["agents"]
        me = next(a for a in listed if a["alias"] == "alice")
        copied = bdh_init_body(slug, "alice", hostname=me.get("hostname", "test-host"))
        copied["workspace_path"] = "/work/alice"
        stolen = await post(hub_server, "/v1/init", copied)
        assert stolen.status_code == 409 and "alias_exists" in stolen.text
        mallory = await onboard(hub_server.http_url, unique("other"), "mallory")
        with_other_key = await post(hub_server, "/v1/init", copied, mallory["api_key"])
        assert "alias_exists" in with_other_key.text
        keys = (await victim.call("keys.list"))["keys"]
        assert len(keys) == 1  # no key was minted for alice
        # alice herself (her key) may bind the alias again, from a new worktree.
        again = await post(hub_server, "/v1/init", copied, alice["api_key"])
        assert again.status_code == 200 and again.json()["agent_id"] == alice["agent_id"]


async def test_a_deleted_agent_is_not_revived_by_an_anonymous_init(hub_server, join, slug):
    gone = await join("gone")
    human = await sign_in_human(hub_server, slug)
    deleted = await httpx.AsyncClient(base_url=hub_server.http_url).delete(
        f"/v1/workspaces/{gone['agent_id']}",
        headers={"Authorization": f"Bearer {human['ticket']}"},
    )
    assert deleted.status_code == 200
    body = bdh_init_body(slug, "gone")
    assert "alias_exists" in (await post(hub_server, "/v1/init", body)).text
    # Its own key died with it: a credential that proves nothing is refused.
    assert (await post(hub_server, "/v1/init", body, gone["api_key"])).status_code == 401
    # A human may bring it back.
    revived = await post(hub_server, "/v1/init", body, human["ticket"])
    assert revived.status_code == 200 and revived.json()["agent_id"] == gone["agent_id"]


# -- human credentials -------------------------------------------------------------------


async def test_an_agent_key_opens_only_that_agents_own_view(hub_server, join, slug):
    alice, bob = await join("alice"), await join("bob")
    ticket = (await post(hub_server, "/v1/auth/ticket", {"api_key": alice["api_key"]})).json()
    assert ticket["kind"] == "agent"
    async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
        escalation = await b.call("escalations.create", subject="help", situation="stuck")
    async with HubClient(hub_server.ws_url, ticket=ticket["ticket"]) as view:
        me = await view.call("session.whoami")
        assert me["agent_id"] == alice["agent_id"] and me["alias"] == "alice"
        refused = await rpc_error(
            view.call(
                "escalations.respond", escalation_id=escalation["escalation_id"], response="x"
            )
        )
        assert refused.code == ErrorCode.FORBIDDEN
        for human_only in ("join.requests", "audit.list"):
            assert (await rpc_error(view.call(human_only))).code == ErrorCode.FORBIDDEN
        # What alice may do herself, her view may do.
        sent = await view.call("mail.send", to=["bob"], body="from alice's dashboard")
        assert sent["recipients"] == 1
        # The view is not alice at work: it does not make her online.
        online = (await view.call("presence.list", online_only=True))["agents"]
        assert "alice" not in {a["alias"] for a in online}


async def test_sign_in_links_are_one_time_and_agents_cannot_make_them(hub_server, join, slug):
    alice = await join("alice")
    refused = await post(
        hub_server, "/v1/auth/links", {"human_name": "eve", "project_slug": slug}, alice["api_key"]
    )
    assert refused.status_code == 403
    link = await post(
        hub_server,
        "/v1/auth/links",
        {"human_name": "Ana", "project_slug": slug},
        hub_server.hub.operator_token,
    )
    token = link.json()["token"]
    assert link.json()["url"].endswith(f"/#signin={token}")
    first = await post(hub_server, "/v1/auth/signin", {"token": token})
    assert first.status_code == 200 and first.json()["human_name"] == "Ana"
    assert first.json()["project_slug"] == slug
    assert (await post(hub_server, "/v1/auth/signin", {"token": token})).status_code == 401
    # A signed-in human invites another by link.
    async with HubClient(hub_server.ws_url, ticket=first.json()["ticket"]) as ana:
        invite = await ana.call("auth.link", human_name="Bea")
    bea = await post(hub_server, "/v1/auth/signin", {"token": invite["token"]})
    assert bea.json()["human_name"] == "Bea" and bea.json()["kind"] == "human"
    # The operator token alone lists the projects to choose from.
    choose = await post(hub_server, "/v1/auth/signin", {"token": hub_server.hub.operator_token})
    assert choose.json()["choose_project"] is True and slug in choose.json()["projects"]
    # No agent key signs in as a human.
    as_key = await post(hub_server, "/v1/auth/signin", {"token": alice["api_key"]})
    assert as_key.status_code == 401


async def test_tickets_never_ride_in_the_url_and_browsers_offer_them_as_a_subprotocol(
    hub_server, join, slug
):
    await join("alice")
    signed_in = await sign_in_human(hub_server, slug)
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(f"{hub_server.ws_url}/v1/ws?ticket={signed_in['ticket']}"):
            pass
    assert refused.value.response.status_code == 401
    async with ws_connect(
        f"{hub_server.ws_url}/v1/ws",
        subprotocols=["beadhub", f"beadhub.ticket.{signed_in['ticket']}"],  # type: ignore[list-item]
    ) as socket:
        assert socket.subprotocol == "beadhub"
        await socket.send('{"jsonrpc": "2.0", "id": 1, "method": "session.whoami"}')
        answer = await socket.recv()
        assert '"agent_id":null' in str(answer)


# -- roles are granted ----------------------------------------------------------------------


async def test_only_a_human_grants_the_coordinator_role(hub_server, join, slug):
    carol = await join("carol", role="coordinator")
    async with HubClient(hub_server.ws_url, carol["api_key"]) as c:
        # Declaring the role picks the playbook and grants nothing.
        assert (await rpc_error(c.call("policy.reset"))).code == ErrorCode.FORBIDDEN
        selfish = await rpc_error(
            c.call("agents.grant", agent_id=carol["agent_id"], role="coordinator")
        )
        assert selfish.code == ErrorCode.FORBIDDEN
        await grant_coordinator(hub_server, carol)
        assert (await c.call("policy.reset"))["reset"] is True
        human = await human_client(hub_server, slug)
        try:
            taken = await human.call("agents.grant", agent_id=carol["agent_id"], role=None)
            assert taken["granted_role"] is None
        finally:
            await human.close()
        assert (await rpc_error(c.call("policy.reset"))).code == ErrorCode.FORBIDDEN


async def test_a_coordinator_never_answers_its_own_escalation(hub_server, join):
    carol = await grant_coordinator(hub_server, await join("carol"))
    async with HubClient(hub_server.ws_url, carol["api_key"]) as c:
        mine = await c.call("escalations.create", subject="mine", situation="my own")
        refused = await rpc_error(
            c.call("escalations.respond", escalation_id=mine["escalation_id"], response="ok")
        )
        assert refused.code == ErrorCode.FORBIDDEN


# -- keys and revocation -----------------------------------------------------------------------


async def test_revoking_a_key_refuses_it_at_once_and_closes_its_sessions(hub_server, join, slug):
    alice, bob = await join("alice"), await join("bob")
    session = await HubClient(hub_server.ws_url, alice["api_key"]).connect()
    http = httpx.AsyncClient(
        base_url=hub_server.http_url, headers={"Authorization": f"Bearer {alice['api_key']}"}
    )
    try:
        assert (await http.get("/v1/status")).status_code == 200  # now in the auth cache
        async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
            theirs = (await b.call("keys.list"))["keys"]
            assert {k["alias"] for k in theirs} == {"bob"}  # an agent sees its own keys
            mine = (await session.call("keys.list"))["keys"][0]["key_id"]
            nope = await rpc_error(b.call("keys.revoke", key_id=mine))
            assert nope.code == ErrorCode.NOT_FOUND
        human = await human_client(hub_server, slug)
        try:
            listed = (await human.call("keys.list"))["keys"]
            assert {k["alias"] for k in listed} >= {"alice", "bob"}
            revoked = await human.call("keys.revoke", key_id=mine)
            assert revoked["active"] is False and revoked["revoked_by"] == "human:juan"
        finally:
            await human.close()
        await asyncio.wait_for(session.ended(), CLOSED_WITHIN)
        assert session.revoked
        assert (await http.get("/v1/status")).status_code == 401
    finally:
        await http.aclose()
        await session.close()


async def test_keys_list_when_each_key_was_last_used_without_a_write_per_call(
    hub_server, join, slug
):
    by_ws, by_http, by_mcp, unused = [await join(a) for a in ("ws", "http", "mcp", "idle")]
    await (await HubClient(hub_server.ws_url, by_ws["api_key"]).connect()).close()
    async with httpx.AsyncClient(base_url=hub_server.http_url, timeout=10) as http:

        async def use_http() -> None:
            as_http = {"Authorization": f"Bearer {by_http['api_key']}"}
            assert (await http.get("/v1/status", headers=as_http)).status_code == 200

        await use_http()
        answer = await http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={
                "Authorization": f"Bearer {by_mcp['api_key']}",
                "Accept": "application/json, text/event-stream",
            },
        )
        assert answer.status_code == 200
        human = await human_client(hub_server, slug)
        try:
            listed = {k["alias"]: k for k in (await human.call("keys.list"))["keys"]}
            for agent in (by_ws, by_http, by_mcp):
                assert listed[agent["alias"]]["last_used_at"] is not None, agent["alias"]
            assert listed[unused["alias"]]["last_used_at"] is None
            # Used again within the minute: not written again.
            await use_http()
            again = {k["alias"]: k for k in (await human.call("keys.list"))["keys"]}
            assert (
                again[by_http["alias"]]["last_used_at"] == listed[by_http["alias"]]["last_used_at"]
            )
        finally:
            await human.close()


async def test_rotating_answers_the_new_key_then_closes_the_old_sessions(hub_server, join):
    alice = await join("alice")
    old = await HubClient(hub_server.ws_url, alice["api_key"]).connect()
    try:
        rotated = await old.call("keys.rotate")
        assert rotated["api_key"] != alice["api_key"] and len(rotated["revoked"]) == 1
        await asyncio.wait_for(old.ended(), CLOSED_WITHIN)
        async with HubClient(hub_server.ws_url, rotated["api_key"]) as new:
            assert (await new.call("session.whoami"))["agent_id"] == alice["agent_id"]
        refused = await rpc_error(HubClient(hub_server.ws_url, alice["api_key"]).connect())
        assert refused.code == ErrorCode.UNAUTHORIZED
    finally:
        await old.close()


async def test_deleting_an_agent_or_signing_out_closes_what_is_open(hub_server, join, slug):
    alice = await join("alice")
    agent_session = await HubClient(hub_server.ws_url, alice["api_key"]).connect()
    signed_in = await sign_in_human(hub_server, slug)
    dashboard = await HubClient(hub_server.ws_url, ticket=signed_in["ticket"]).connect()
    try:
        await dashboard.call("agents.delete", agent_id=alice["agent_id"])
        await asyncio.wait_for(agent_session.ended(), CLOSED_WITHIN)
        revoked = await post(hub_server, "/v1/auth/ticket/revoke", {"ticket": signed_in["ticket"]})
        assert revoked.json()["revoked"] is True
        await asyncio.wait_for(dashboard.ended(), CLOSED_WITHIN)
        assert dashboard.revoked
    finally:
        await agent_session.close()
        await dashboard.close()


async def test_an_expiring_ticket_closes_its_session(hub_server, join, slug):
    alice = await join("alice")
    project = {"id": alice["project_id"], "slug": slug}
    async with hub_server.hub.store.connection() as conn:
        short = await tickets.issue_for_human(conn, project, "brief", ttl_seconds=1)
    session = await HubClient(hub_server.ws_url, ticket=short["ticket"]).connect()
    try:
        await asyncio.wait_for(session.ended(), 1 + CLOSED_WITHIN)
        assert session.revoked
    finally:
        await session.close()


# -- who may delete a workspace: bdh's clean-up of gone worktrees --------------------------


async def test_an_agent_deletes_only_offline_workspaces_of_its_own_host(hub_server, slug):
    host = f"host-{uuid.uuid4().hex[:6]}"
    me = await onboard(hub_server.http_url, slug, "me", hostname=host)
    gone = await onboard(hub_server.http_url, slug, "gone", hostname=host)
    busy = await onboard(hub_server.http_url, slug, "busy", hostname=host)
    elsewhere = await onboard(hub_server.http_url, slug, "far", hostname="another-host")
    headers = {"Authorization": f"Bearer {me['api_key']}"}
    async with (
        HubClient(hub_server.ws_url, busy["api_key"]),
        httpx.AsyncClient(base_url=hub_server.http_url, headers=headers) as http,
    ):
        listed = await http.get("/v1/workspaces", params={"hostname": host})
        assert {w["alias"] for w in listed.json()["workspaces"]} == {"me", "gone", "busy"}
        assert (await http.delete(f"/v1/workspaces/{gone['agent_id']}")).status_code == 200
        assert (await http.delete(f"/v1/workspaces/{busy['agent_id']}")).status_code == 403
        assert (await http.delete(f"/v1/workspaces/{elsewhere['agent_id']}")).status_code == 403
        # Saying one is on the other host now changes nothing.
        spoof = {"workspace_id": me["agent_id"], "alias": "me", "hostname": "another-host"}
        assert (await http.post("/v1/agents/register", json=spoof)).status_code == 200
        assert (await http.delete(f"/v1/workspaces/{elsewhere['agent_id']}")).status_code == 403


async def test_only_a_human_deletes_the_project(hub_server, join, slug):
    alice = await join("alice")
    headers = {"Authorization": f"Bearer {alice['api_key']}"}
    async with httpx.AsyncClient(base_url=hub_server.http_url, headers=headers) as http:
        refused = await http.delete(f"/v1/projects/{alice['project_id']}")
        assert refused.status_code == 403 and refused.json()["data"]["needs"] == "human"
        assert (await http.get("/v1/status")).status_code == 200


# -- what the dashboard is told -----------------------------------------------------------


async def events_until(client: HubClient, marker: str) -> list[str]:
    """The types of the events ``client`` gets up to the mail with subject
    ``marker`` (which the test sends last: what was not seen by then was
    not sent to it)."""
    seen: list[str] = []
    async with asyncio.timeout(5):
        async for event in client.events():
            if event["type"] == "mail" and event["data"]["subject"] == marker:
                return seen
            seen.append(event["type"])
    raise AssertionError("unreachable")


async def test_key_changes_the_join_policy_and_the_trail_are_announced(hub_server, join, slug):
    alice, bob = await join("alice"), await join("bob")
    human = await human_client(hub_server, slug)
    try:
        async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
            rotated = await human.call("keys.rotate", agent_id=alice["agent_id"])
            seen = (await human.next_event("key.rotated", timeout=5))["data"]
            assert (seen["agent_id"], seen["key_id"], seen["by"]) == (
                alice["agent_id"],
                rotated["key_id"],
                "human:juan",
            )
            assert rotated["api_key"].startswith(seen["prefix"])
            assert rotated["api_key"] not in str(seen) and len(seen["revoked"]) == 1
            revoked = await human.call("keys.revoke", key_id=rotated["key_id"])
            gone = (await human.next_event("key.revoked", timeout=5))["data"]
            assert gone["key_id"] == revoked["key_id"] and gone["active"] is False
            await human.call("keys.revoke", key_id=rotated["key_id"])  # already revoked: no news
            policy = await human.call("join.policy.set", join_policy="approval")
            announced = (await human.next_event("join.policy.updated", timeout=5))["data"]
            assert announced == {**policy, "by": "human:juan"}
            # The trail's entry follows the change it records.
            entry = (await human.next_event("audit.recorded", timeout=5))["data"]
            assert (entry["actor"], entry["action"], entry["outcome"]) == (
                "human:juan",
                "join.policy.set",
                "ok",
            )
            assert entry["detail"] == {"join_policy": "approval"}
            assert (await human.call("audit.list", limit=1))["entries"] == [entry]

            # Bob saw none of it: another agent's keys, the policy and the
            # trail are for the humans (and the key's own agent).
            await human.call("mail.send", to=["bob"], subject="marker", body="-")
            assert not {
                "key.rotated",
                "key.revoked",
                "join.policy.updated",
                "audit.recorded",
            } & set(await events_until(b, "marker"))
            types = await hub_server.hub.store.fetch(
                "SELECT type, recipients FROM events WHERE project_id = $1 AND type LIKE 'key.%'",
                alice["project_id"],
            )
            assert sorted((r["type"], r["recipients"]) for r in types) == [
                ("key.revoked", [alice["agent_id"]]),
                ("key.rotated", [alice["agent_id"]]),
            ]
    finally:
        await human.close()


async def test_the_team_listing_says_which_role_a_human_granted(hub_server, join, slug):
    lena = await grant_coordinator(hub_server, await join("lena", role="coordinator"))
    await join("bob", role="coordinator")  # declared only
    async with HubClient(hub_server.ws_url, lena["api_key"]) as client:
        agents = {a["alias"]: a for a in (await client.call("presence.list"))["agents"]}
    assert agents["lena"]["granted_role"] == "coordinator"
    assert agents["bob"]["granted_role"] is None and agents["bob"]["role"] == "coordinator"


async def test_the_dashboards_reads_are_not_actions_in_the_trail(hub_server, join, slug):
    await join("alice")
    human = await human_client(hub_server, slug)
    try:
        trail = (await human.call("audit.list"))["entries"]
        for method, params in [
            ("team.stale", {}),
            ("team.waiting", {}),
            ("chat.all", {}),
            ("search.query", {"text": "anything"}),
        ]:
            await human.call(method, **params)
        assert (await human.call("audit.list"))["entries"] == trail
    finally:
        await human.close()
