"""Claims: exactly one agent works an issue; everyone else is told who."""

from __future__ import annotations

import asyncio

import pytest

from hub.services import beads, claims
from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from tests.support import RunningHub, actor_of, onboard, unique
from tests.test_beads import issue, jsonl


async def test_fifty_agents_race_for_one_issue_and_exactly_one_wins(hub_server, slug):
    agents = await asyncio.gather(
        *(
            onboard(hub_server.http_url, slug, f"agent{n:02d}", human_name=f"Human {n}")
            for n in range(50)
        )
    )
    clients = await asyncio.gather(
        *(HubClient(hub_server.ws_url, a["api_key"]).connect() for a in agents)
    )
    try:
        await clients[0].call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-race")))
        outcomes = await asyncio.gather(
            *(c.call("claims.claim", bead_id="bd-race") for c in clients), return_exceptions=True
        )
        won = [(n, r) for n, r in enumerate(outcomes) if not isinstance(r, BaseException)]
        lost = [r for r in outcomes if isinstance(r, BaseException)]
        assert len(won) == 1, won
        n, result = won[0]
        assert result["acquired"] is True
        winner = agents[n]
        assert result["claim"]["alias"] == winner["alias"]
        assert len(lost) == 49
        expected = f"bd-race is being worked on by {winner['alias']} (Human {n})"
        for error in lost:
            assert isinstance(error, RpcError)
            assert error.code == ErrorCode.CONFLICT
            assert error.message == expected
            assert error.data["holder_alias"] == winner["alias"]
            assert error.data["holder_human_name"] == f"Human {n}"
            assert error.data["holder_agent_id"] == winner["agent_id"]
            assert error.data["bead_id"] == "bd-race"
            assert error.data["claimed_at"] == result["claim"]["claimed_at"]
        listed = (await clients[0].call("claims.list"))["claims"]
        assert [(c["bead_id"], c["alias"]) for c in listed] == [("bd-race", winner["alias"])]

        # Released, it goes to the next agent who asks.
        assert (await clients[n].call("claims.release", bead_id="bd-race"))["released"] is True
        other = (n + 1) % 50
        taken = await clients[other].call("claims.claim", bead_id="bd-race")
        assert taken["claim"]["alias"] == agents[other]["alias"]
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_claim_is_idempotent_for_the_holder_and_release_rules(join, connect):
    alice = await connect(await join("alice"))
    bob = await connect(await join("bob"))
    await alice.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-1"), issue("bd-2")))
    first = await alice.call("claims.claim", bead_id="bd-1")
    again = await alice.call("claims.claim", bead_id="bd-1")
    assert (first["acquired"], again["acquired"]) == (True, False)
    assert again["claim"]["claimed_at"] == first["claim"]["claimed_at"]

    # No human name: no parentheses.
    with pytest.raises(RpcError) as err:
        await bob.call("claims.claim", bead_id="bd-1")
    assert err.value.message == "bd-1 is being worked on by alice"
    with pytest.raises(RpcError) as err:
        await bob.call("claims.release", bead_id="bd-1")
    assert err.value.code == ErrorCode.CONFLICT
    assert (await bob.call("claims.release", bead_id="bd-2"))["released"] is False

    assert "bd-1" not in [i["bead_id"] for i in (await bob.call("beads.ready"))["issues"]]
    await alice.call("claims.release", bead_id="bd-1")
    assert (await bob.call("claims.claim", bead_id="bd-1"))["acquired"] is True


async def test_claim_of_unknown_or_closed_issue(join, connect, hub_server):
    agent = await join("alice")
    alice = await connect(agent)
    await alice.call(
        "beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-shut", status="closed"))
    )
    with pytest.raises(RpcError) as err:
        await alice.call("claims.claim", bead_id="bd-new")
    assert err.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(RpcError) as err:
        await alice.call("claims.claim", bead_id="bd-shut")
    assert err.value.code == ErrorCode.CONFLICT

    # The bdh shim may claim ahead of the first sync.
    result = await claims.claim(hub_server.hub, actor_of(agent), "bd-new", allow_unknown=True)
    assert (result["acquired"], result["claim"]["title"]) == (True, "")
    listed = (await alice.call("claims.list"))["claims"]
    assert [c["bead_id"] for c in listed] == ["bd-new"]


async def test_claim_shows_in_status_and_reaches_the_team(any_server: RunningHub):
    slug = unique("proj")
    alice_agent = await onboard(any_server.http_url, slug, "alice-frontend", human_name="juan")
    bob_agent = await onboard(any_server.http_url, slug, "bob")
    async with (
        HubClient(any_server.ws_url, alice_agent["api_key"]) as alice,
        HubClient(any_server.ws_url, bob_agent["api_key"]) as bob,
    ):
        await alice.call(
            "beads.sync",
            mode="full",
            issues_jsonl=jsonl(
                issue("bd-epic", issue_type="epic", title="Checkout"),
                issue(
                    "bd-15",
                    title="Pay button",
                    dependencies=[
                        {"issue_id": "bd-15", "depends_on_id": "bd-epic", "type": "parent-child"}
                    ],
                ),
            ),
        )
        claimed = await alice.call("claims.claim", bead_id="bd-15")
        event = await bob.next_event("claim.acquired", timeout=2)
        assert event["data"] == {
            "bead_id": "bd-15",
            "title": "Pay button",
            "agent_id": alice_agent["agent_id"],
            "workspace_id": alice_agent["agent_id"],
            "alias": "alice-frontend",
            "human_name": "juan",
            "claimed_at": claimed["claim"]["claimed_at"],
            "token": claimed["claim"]["token"],
        }

        status = await bob.call("status.get")
        row = next(a for a in status["agents"] if a["alias"] == "alice-frontend")
        assert row["current_issue"] == "bd-15"
        assert row["claims"] == [
            {
                "bead_id": "bd-15",
                "title": "Pay button",
                "claimed_at": claimed["claim"]["claimed_at"],
                "apex_id": "bd-epic",
                "apex_title": "Checkout",
                "apex_type": "epic",
            }
        ]
        bob_row = next(a for a in status["agents"] if a["alias"] == "bob")
        assert (bob_row["claims"], bob_row["current_issue"]) == ([], None)

        with pytest.raises(RpcError) as err:
            await bob.call("claims.claim", bead_id="bd-15")
        assert err.value.message == "bd-15 is being worked on by alice-frontend (juan)"

        await alice.call("claims.release", bead_id="bd-15")
        released = await bob.next_event("claim.released", timeout=2)
        assert (released["data"]["bead_id"], released["data"]["alias"]) == (
            "bd-15",
            "alice-frontend",
        )
        status = await bob.call("status.get")
        row = next(a for a in status["agents"] if a["alias"] == "alice-frontend")
        assert (row["claims"], row["current_issue"]) == ([], None)


async def test_projects_cannot_see_or_claim_each_others_issues(hub_server, connect):
    a_agent = await onboard(hub_server.http_url, unique("proj"), "alice")
    b_agent = await onboard(hub_server.http_url, unique("proj"), "mallory")
    a, b = await connect(a_agent), await connect(b_agent)
    await a.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-1"), issue("bd-2")))
    await a.call("claims.claim", bead_id="bd-1")

    assert (await b.call("beads.list"))["issues"] == []
    assert (await b.call("beads.ready"))["issues"] == []
    assert (await b.call("claims.list"))["claims"] == []
    for method in ("beads.get", "claims.claim"):
        with pytest.raises(RpcError) as err:
            await b.call(method, bead_id="bd-2")
        assert err.value.code == ErrorCode.NOT_FOUND
    assert (await b.call("claims.release", bead_id="bd-1"))["released"] is False

    # The same ids in project B are B's own: no conflict with A's claim,
    # and B's full sync deletes nothing of A's.
    await b.call("beads.sync", mode="full", issues_jsonl=jsonl(issue("bd-1")))
    assert (await b.call("claims.claim", bead_id="bd-1"))["acquired"] is True
    assert [i["bead_id"] for i in (await a.call("beads.list"))["issues"]] == ["bd-1", "bd-2"]
    assert [c["alias"] for c in (await a.call("claims.list"))["claims"]] == ["alice"]


@pytest.mark.parametrize(
    ("command", "approved"),
    [
        ("update bd-12 --status in_progress", False),
        ("update bd-12 --status=in_progress", False),
        ("bd update bd-12 -s in_progress --json", False),
        ("update --title 'Fix it' bd-12 --claim", False),
        ("close bd-12 --reason done", False),
        ("close bd-3 bd-12", False),
        ("update bd-12 --status closed", False),
        ("reopen bd-12", True),
        ("update bd-12 --priority 1", True),
        ("show bd-12", True),
        ("update bd-3 --status in_progress", True),
        ("update bd-7 --status in_progress", True),
        ("create 'bd-12 follow-up' -p 1", True),
        ('update bd-12 --status "in_progress', False),
    ],
)
async def test_check_command_rejects_claiming_or_closing_anothers_issue(
    hub_server, slug, command, approved
):
    bob = await onboard(hub_server.http_url, slug, "bob", human_name="Bob Human")
    carol = await onboard(hub_server.http_url, slug, "carol")
    hub = hub_server.hub
    await claims.claim(hub, actor_of(bob), "bd-12", allow_unknown=True)
    await claims.claim(hub, actor_of(carol), "bd-7", allow_unknown=True)
    result = await claims.check_command(hub, actor_of(carol), command)
    assert result["approved"] is approved
    if not approved:
        assert result["reason"] == "bd-12 is being worked on by bob (Bob Human)"
        assert result["holder_alias"] == "bob"
    # The holder itself is approved for its own issue.
    if "bd-7" not in command:
        assert (await claims.check_command(hub, actor_of(bob), command))["approved"] is True


async def test_in_progress_lists_the_teams_claims_for_the_shim(hub_server, slug):
    alice = await onboard(hub_server.http_url, slug, "alice", human_name="Al", role="backend")
    hub = hub_server.hub
    await beads.sync(hub, actor_of(alice), "full", issues_jsonl=jsonl(issue("bd-1")))
    claimed = await claims.claim(hub, actor_of(alice), "bd-1")
    assert await beads.in_progress(hub, alice["project_id"]) == [
        {
            "bead_id": "bd-1",
            "workspace_id": alice["agent_id"],
            "alias": "alice",
            "human_name": "Al",
            "started_at": claimed["claim"]["claimed_at"],
            "title": "Title of bd-1",
            "role": "backend",
        }
    ]
