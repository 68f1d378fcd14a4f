"""Project policy: seeded from the defaults on first read, versioned,
changed only by humans and coordinators, and separate per project."""

from __future__ import annotations

import asyncio
from typing import Any

from protocol.client import HubClient
from protocol.errors import ErrorCode
from tests.support import grant_coordinator, onboard, unique
from tests.test_escalations import open_dashboard, rpc_error

ROLES = {"coordinator", "developer", "backend", "frontend", "reviewer"}

CUSTOM: dict[str, Any] = {
    "invariants": [
        {"id": "tests-first", "title": "Write the test first", "body_md": "Red, green, refactor."}
    ],
    "roles": {"developer": {"title": "Dev", "playbook_md": "Ship small."}},
}


async def test_first_read_seeds_the_defaults_with_every_role(join, connect):
    a = await connect(await join("alice"))
    policy = await a.call("policy.get")
    assert policy["version"] == 1
    assert set(policy["roles"]) == ROLES
    assert all(r["title"] and r["playbook_md"] for r in policy["roles"].values())
    ids = [i["id"] for i in policy["invariants"]]
    assert {"claim-before-work", "respect-claims", "reserve-before-edit"} <= set(ids)
    assert {"escalate-when-blocked", "keep-beads-synced"} <= set(ids)
    assert all(i["title"] and i["body_md"] for i in policy["invariants"])
    assert (
        "bdh update <id> --status in_progress"
        in policy["invariants"][ids.index("claim-before-work")]["body_md"]
    )
    assert policy["selected_role"] is None
    assert policy["etag"] == f'"{policy["policy_id"]}-1"'
    assert policy["updated_at"].endswith("Z")
    assert await a.call("policy.get") == policy


async def test_a_role_can_be_selected(join, connect):
    a = await connect(await join("alice"))
    backend = await a.call("policy.get", role="backend")
    assert backend["selected_role"]["role"] == "backend"
    assert backend["selected_role"]["title"] == "Backend"
    assert backend["selected_role"]["playbook_md"] == backend["roles"]["backend"]["playbook_md"]
    assert set(backend["roles"]) == ROLES

    only = await a.call("policy.get", role="Reviewer", only_selected=True)
    assert only["selected_role"]["role"] == "reviewer"
    assert list(only["roles"]) == ["reviewer"]

    unknown = await rpc_error(a.call("policy.get", role="astronaut"))
    assert unknown.code == ErrorCode.NOT_FOUND
    assert set(unknown.data["roles"]) == ROLES
    assert "coordinator" in unknown.message
    no_role = await rpc_error(a.call("policy.get", only_selected=True))
    assert no_role.code == ErrorCode.INVALID_PARAMS


async def test_new_version_then_activate_an_older_one_then_reset(join, connect, hub_server):
    lead = await connect(await grant_coordinator(hub_server, await join("carol")))
    dev = await connect(await join("bob", role="developer"))
    v1 = await dev.call("policy.get")

    v2 = await lead.call("policy.create", **CUSTOM)
    assert (v2["version"], v2["active"]) == (2, True)
    event = await dev.next_event("policy.updated", where=lambda e: e["data"]["version"] == 2)
    assert event["data"]["policy_id"] == v2["policy_id"]
    now_active = await dev.call("policy.get", role="developer")
    assert now_active["version"] == 2
    assert now_active["invariants"] == CUSTOM["invariants"]
    assert now_active["selected_role"]["playbook_md"] == "Ship small."
    assert now_active["etag"] != v1["etag"]
    unknown = await rpc_error(dev.call("policy.get", role="backend"))
    assert unknown.data["roles"] == ["developer"]

    back = await lead.call("policy.activate", version=1)
    assert (back["version"], back["active"]) == (1, True)
    await dev.next_event(
        "policy.updated", where=lambda e: e["data"]["version"] == 1 and e["data"]["active"]
    )
    rolled_back = await dev.call("policy.get")
    assert (rolled_back["version"], rolled_back["invariants"]) == (1, v1["invariants"])
    assert rolled_back["etag"] == v1["etag"]

    reset = await lead.call("policy.reset")
    assert (reset["reset"], reset["version"]) == (True, 3)
    assert reset["active_policy_id"] == reset["policy_id"]
    current = await dev.call("policy.get")
    assert current["version"] == 3
    assert (current["invariants"], current["roles"]) == (v1["invariants"], v1["roles"])

    draft = await lead.call("policy.create", **CUSTOM, activate=False)
    assert (draft["version"], draft["active"]) == (4, False)
    assert (await dev.call("policy.get"))["version"] == 3

    listed = await dev.call("policy.versions")
    assert [v["version"] for v in listed["versions"]] == [4, 3, 2, 1]
    assert [v["active"] for v in listed["versions"]] == [False, True, False, False]
    assert listed["active_version"] == 3
    assert listed["versions"][2]["roles"] == ["developer"]

    missing = await rpc_error(lead.call("policy.activate", version=9))
    assert missing.code == ErrorCode.NOT_FOUND


async def test_only_humans_and_coordinators_change_the_policy(join, connect, hub_server):
    dev_agent = await join("bob", role="developer")
    dev = await connect(dev_agent)
    # Declaring oneself coordinator picks a playbook and grants nothing.
    claimed = await connect(await join("eve", role="coordinator"))
    await dev.call("policy.get")
    for who in (dev, claimed):
        for call in (
            who.call("policy.create", **CUSTOM),
            who.call("policy.activate", version=1),
            who.call("policy.reset"),
        ):
            assert (await rpc_error(call)).code == ErrorCode.FORBIDDEN
    assert [v["version"] for v in (await dev.call("policy.versions"))["versions"]] == [1]

    human = await open_dashboard(hub_server, dev_agent)
    try:
        made = await human.call("policy.create", **CUSTOM)
        assert made["version"] == 2
        assert made["created_by"] == "juan"
    finally:
        await human.close()


async def test_bad_policies_are_refused(join, connect, hub_server):
    lead = await connect(await grant_coordinator(hub_server, await join("carol")))
    twice = {**CUSTOM, "invariants": CUSTOM["invariants"] * 2}
    duplicate = await rpc_error(lead.call("policy.create", **twice))
    assert duplicate.code == ErrorCode.INVALID_PARAMS
    assert duplicate.data["duplicates"] == ["tests-first"]
    bad_role = {**CUSTOM, "roles": {"Not A Role!": {"title": "x", "playbook_md": ""}}}
    assert (await rpc_error(lead.call("policy.create", **bad_role))).code == (
        ErrorCode.INVALID_PARAMS
    )
    assert (await lead.call("policy.get"))["version"] == 1


async def test_concurrent_first_reads_create_one_version(join, hub_server):
    agents = [await join(f"agent{i}") for i in range(5)]
    clients = [
        await HubClient(hub_server.ws_url, agents[i % 5]["api_key"]).connect() for i in range(10)
    ]
    try:
        results = await asyncio.gather(*(c.call("policy.get") for c in clients))
        assert {r["version"] for r in results} == {1}
        assert len({r["policy_id"] for r in results}) == 1
        versions = await clients[0].call("policy.versions")
        assert [v["version"] for v in versions["versions"]] == [1]
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_projects_have_separate_policies(hub_server, connect):
    mine = await connect(
        await grant_coordinator(hub_server, await onboard(hub_server.http_url, unique("proj"), "a"))
    )
    theirs = await connect(
        await grant_coordinator(hub_server, await onboard(hub_server.http_url, unique("proj"), "m"))
    )
    await mine.call("policy.create", **CUSTOM)
    their_policy = await theirs.call("policy.get")
    assert their_policy["version"] == 1
    assert set(their_policy["roles"]) == ROLES
    assert their_policy["policy_id"] != (await mine.call("policy.get"))["policy_id"]
    # Version 2 exists only in the other project.
    assert (await rpc_error(theirs.call("policy.activate", version=2))).code == (
        ErrorCode.NOT_FOUND
    )
    assert [v["version"] for v in (await theirs.call("policy.versions"))["versions"]] == [1]
