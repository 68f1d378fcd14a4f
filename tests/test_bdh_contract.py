"""What the real bdh client (beadhub/bdh 464b0e0, aw v0.4.0) checks, one
plain HTTP test per rule of issue 14, so CI guards each on any machine
(tests/e2e/test_bdh_client.py runs the binary itself where it is built)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from hub.transport.http import outputs as o
from tests.shim import Shim, bdh_init_body, error, in_seconds, ok, sse
from tests.support import RunningHub, running_hub, unique

NewAgent = Callable[..., Awaitable[Shim]]

#: A generous bound for what must happen at once; a wait that is never a sleep.
SOON = 10.0


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = SOON) -> None:
    """Poll a condition the hub must reach, up to ``timeout`` seconds."""
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {check.__name__}")


async def sender_waiting(shim: Shim, session_id: str) -> bool:
    pending = ok(await shim.get("/v1/chat/pending"), o.ChatPendingResponse)["pending"]
    return any(p["session_id"] == session_id and p["sender_waiting"] for p in pending)


async def open_chat(sender: Shim, to: str, message: str) -> dict[str, Any]:
    return ok(
        await sender.post("/v1/chat/sessions", {"to_aliases": [to], "message": message}),
        o.ChatCreateSessionResponse,
    )


def anonymous(server: RunningHub, source: str = "127.0.0.1") -> httpx.AsyncClient:
    """A caller with no key, from a loopback address of its own choosing
    (the suggestion routes count requests per address)."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=server.http_url, transport=transport, timeout=10)


def repo() -> str:
    return f"git@github.com:acme/{unique('repo')}.git"


# -- 1. key format -------------------------------------------------------------------


async def test_keys_are_minted_as_bdh_keeps_them_and_old_keys_still_work(
    hub_server: RunningHub, agent: NewAgent
):
    alice = await agent("alice")
    key = alice.agent["api_key"]
    # bdh keeps a key only when it starts with aw_sk_ and has 38 characters or more.
    assert key.startswith("aw_sk_") and len(key) >= 38
    assert ok(await alice.get("/v1/auth/introspect"), o.IntrospectResponse)["alias"] == "alice"

    # A key minted before the change (bh_...): only its hash was ever stored.
    old = "bh_" + secrets.token_urlsafe(32)
    await hub_server.hub.store.execute(
        "INSERT INTO api_keys (project_id, agent_id, key_hash, prefix) VALUES ($1, $2, $3, $4)",
        alice.agent["project_id"],
        alice.id,
        hashlib.sha256(old.encode()).digest(),
        old[:10],
    )
    async with httpx.AsyncClient(
        base_url=hub_server.http_url, headers={"Authorization": f"Bearer {old}"}
    ) as http:
        assert (await http.get("/v1/auth/introspect")).json()["alias"] == "alice"
        forged = {"Authorization": "Bearer aw_sk_" + "x" * 43}
        error(await http.get("/v1/auth/introspect", headers=forged), 401)


# -- 2. init errors carry the substrings bdh looks for ---------------------------------


async def test_a_taken_alias_answers_alias_exists(hub_server: RunningHub, slug: str):
    async with anonymous(hub_server) as http:
        ok(await http.post("/v1/init", json=bdh_init_body(slug, "alice")), o.InitResponse)
        taken = await http.post(
            "/v1/init", json=bdh_init_body(slug, "alice", workspace_path="/src/other")
        )
        assert taken.status_code == 409 and "alias_exists" in taken.text
        assert "alice" in error(taken, 409)
        # bdh's retry: no alias, the hub picks the next free name.
        retry = bdh_init_body(slug, "alice", workspace_path="/src/other")
        del retry["alias"]
        assert ok(await http.post("/v1/init", json=retry), o.InitResponse)["alias"] == "bob"


async def test_init_without_a_slug_joins_the_repos_project_or_answers_project_not_found(
    hub_server: RunningHub, slug: str
):
    origin = repo()
    async with anonymous(hub_server) as http:
        unknown = bdh_init_body("", "alice", repo_origin=origin)
        missing = await http.post("/v1/init", json=unknown)
        assert missing.status_code == 422 and "project_not_found" in missing.text
        assert (
            await hub_server.hub.store.fetchval(
                "SELECT count(*) FROM repos WHERE canonical_origin = $1",
                origin.replace("git@github.com:", "github.com/").removesuffix(".git"),
            )
        ) == 0
        # bdh retries with a slug; a later worktree without one joins that project.
        created = ok(
            await http.post("/v1/init", json={**unknown, "project_slug": slug}), o.InitResponse
        )
        second = bdh_init_body("", "bob", repo_origin=origin, workspace_path="/src/b")
        joined = ok(await http.post("/v1/init", json=second), o.InitResponse)
        assert joined["project_id"] == created["project_id"] and joined["project_slug"] == slug
        assert joined["repo_id"] == created["repo_id"]


# -- 3. name suggestions without a key, rate limited ------------------------------------


async def test_name_suggestions_need_no_key(hub_server: RunningHub, slug: str):
    origin = repo()
    async with anonymous(hub_server) as http:
        before = await http.post("/v1/workspaces/suggest-name-prefix", json={"origin_url": origin})
        # 404 is what bdh reads as "repo not registered".
        error(before, 404)
        first = ok(
            await http.post("/v1/init", json=bdh_init_body(slug, "alice", repo_origin=origin)),
            o.InitResponse,
        )
        by_repo = ok(
            await http.post("/v1/workspaces/suggest-name-prefix", json={"origin_url": origin}),
            o.SuggestNamePrefixResponse,
        )
        assert by_repo == {
            "name_prefix": "bob",
            "project_id": first["project_id"],
            "project_slug": slug,
            "repo_id": first["repo_id"],
            "canonical_origin": first["canonical_origin"],
        }
        by_slug = ok(
            await http.post("/v1/agents/suggest-alias-prefix", json={"project_slug": slug}),
            o.SuggestAliasPrefixResponse,
        )
        assert by_slug == {
            "project_slug": slug,
            "project_id": first["project_id"],
            "name_prefix": "bob",
        }
        nobody = unique("none")
        fresh = ok(
            await http.post("/v1/agents/suggest-alias-prefix", json={"project_slug": nobody}),
            o.SuggestAliasPrefixResponse,
        )
        assert fresh == {"project_slug": nobody, "project_id": None, "name_prefix": "alice"}
        # Nothing else about the project leaks: no aliases, no agents, no key.
        assert "alice" not in by_repo.values() and "api_key" not in by_repo


async def test_name_suggestions_refuse_a_bad_key_and_scope_a_good_one(
    hub_server: RunningHub, agent: NewAgent
):
    origin = repo()
    mallory = await agent("mallory", project=unique("other"))
    async with anonymous(hub_server) as http:
        await http.post("/v1/init", json=bdh_init_body(unique("proj"), "alice", repo_origin=origin))
        body = {"origin_url": origin}
        bad = {"Authorization": "Bearer aw_sk_" + "x" * 43}
        error(await http.post("/v1/workspaces/suggest-name-prefix", json=body, headers=bad), 401)
        error(
            await http.post(
                "/v1/agents/suggest-alias-prefix", json={"project_slug": "x"}, headers=bad
            ),
            401,
        )
    # With a key, only the key's own project counts: mallory's has no such repo.
    error(await mallory.post("/v1/workspaces/suggest-name-prefix", body), 404)


async def test_name_suggestions_are_rate_limited_per_address(database_url: str, slug: str):
    allowed = 5
    async with running_hub(database_url=database_url, rate_anonymous_per_minute=allowed) as hub:
        async with anonymous(hub) as http:
            answers = [
                await http.post("/v1/agents/suggest-alias-prefix", json={"project_slug": slug})
                for _ in range(allowed + 1)
            ]
            assert [a.status_code for a in answers] == [200] * allowed + [429]
            assert "too many requests" in error(answers[-1], 429)
            assert int(answers[-1].headers["retry-after"]) >= 1
            again = await http.post(
                "/v1/workspaces/suggest-name-prefix", json={"origin_url": repo()}
            )
            assert again.status_code == 429
        # Another address is not held back by this one.
        async with anonymous(hub, source="127.0.0.15") as http:
            other = await http.post("/v1/agents/suggest-alias-prefix", json={"project_slug": slug})
            assert other.status_code == 200


# -- 4. a suggested prefix is free for every role ----------------------------------------


async def test_the_suggested_prefix_is_used_by_no_agent(hub_server: RunningHub, slug: str):
    origin = repo()
    async with anonymous(hub_server) as http:
        front = bdh_init_body(slug, "alice-frontend", repo_origin=origin, role="frontend")
        ok(await http.post("/v1/init", json=front), o.InitResponse)
        suggested = ok(
            await http.post("/v1/workspaces/suggest-name-prefix", json={"origin_url": origin}),
            o.SuggestNamePrefixResponse,
        )
        # bdh :add-worktree backend would make "<prefix>-backend": not alice-backend.
        assert suggested["name_prefix"] == "bob"
        by_slug = ok(
            await http.post("/v1/agents/suggest-alias-prefix", json={"project_slug": slug}),
            o.SuggestAliasPrefixResponse,
        )
        assert by_slug["name_prefix"] == "bob"
        # The hub's own pick (init without an alias) follows the same rule.
        picked = bdh_init_body(slug, "x", repo_origin=origin, role="backend", workspace_path="/b")
        del picked["alias"]
        assert (
            ok(await http.post("/v1/init", json=picked), o.InitResponse)["alias"] == "bob-backend"
        )


# -- 5. reservations listing: workspace_id is the caller, alias the holder filter ----------


async def test_reservations_list_the_team_for_the_caller_and_filter_by_alias(agent: NewAgent):
    alice, bob = await agent("alice"), await agent("bob")
    held = {"workspace_id": bob.id, "alias": "bob", "paths": ["src/auth.py"], "ttl_seconds": 300}
    assert ok(await bob.post("/v1/reservations", held), o.LockResponse)["granted"]

    async def listing(shim: Shim, **params: Any) -> list[tuple[str, str]]:
        answer = ok(await shim.get("/v1/reservations", **params), o.ListLocksResponse)
        return [(r["resource_key"], r["holder_alias"]) for r in answer["reservations"]]

    # What bdh :reservations and :status send: the caller's own workspace_id.
    assert await listing(alice, workspace_id=alice.id) == [("src/auth.py", "bob")]
    # --mine adds alias=<me>.
    assert await listing(alice, workspace_id=alice.id, alias="alice") == []
    assert await listing(bob, workspace_id=bob.id, alias="bob") == [("src/auth.py", "bob")]
    # A key cannot claim to be another workspace.
    error(await alice.get("/v1/reservations", workspace_id=bob.id), 403)

    status = ok(await alice.get("/v1/status", workspace_id=alice.id), o.StatusResponse)
    assert [lock["resource_key"] for lock in status["locks"]] == ["src/auth.py"]


# -- 6. waiting ends when the waiter leaves -------------------------------------------


async def test_waiting_ends_when_the_senders_stream_closes(agent: NewAgent):
    alice, bob = await agent("alice"), await agent("bob")
    session = (await open_chat(alice, "bob", "are you there?"))["session_id"]
    # bdh asks for a 10-minute stream and keeps its own, shorter, timer.
    async with sse(alice, session, in_seconds(600)) as stream:
        await stream.next()
        assert await sender_waiting(bob, session)
    # The client hung up: the waiting must end now, not in 10 minutes.

    async def over() -> bool:
        return not await sender_waiting(bob, session)

    await eventually(over)


async def test_waiting_ends_when_a_websocket_waiter_drops(agent: NewAgent, connect):
    alice, bob = await agent("alice"), await agent("bob")
    ws_bob = await connect(bob.agent, reconnect=False)
    waiting = asyncio.create_task(ws_bob.call("chat.send", to=["alice"], body="ping", wait=600))

    async def started() -> bool:
        pending = ok(await alice.get("/v1/chat/pending"), o.ChatPendingResponse)["pending"]
        return any(p["sender_waiting"] for p in pending)

    await eventually(started)
    [conversation] = ok(await alice.get("/v1/chat/pending"), o.ChatPendingResponse)["pending"]
    # The socket drops without a closing handshake (a killed process, a
    # broken network): the hub sees only the connection end.
    assert ws_bob._ws is not None
    ws_bob._ws.transport.abort()
    with contextlib.suppress(Exception):
        await waiting

    async def over() -> bool:
        return not await sender_waiting(alice, conversation["session_id"])

    await eventually(over)


# -- 7. targets_connected: listening on the conversation now ------------------------------


async def test_targets_connected_means_listening_on_that_conversation(agent: NewAgent, connect):
    alice, bob = await agent("alice"), await agent("bob")
    await connect(bob.agent)  # online over a socket, but listening to nothing
    session = (await open_chat(alice, "bob", "first"))["session_id"]
    assert (await open_chat(alice, "bob", "online is not listening"))["targets_connected"] == []

    # bob answers and waits, as bdh's send does: his stream replays his own
    # message once it is listening.
    ok(
        await bob.post(f"/v1/chat/sessions/{session}/messages", {"body": "here"}),
        o.ChatSendMessageResponse,
    )
    async with sse(bob, session, in_seconds(60)) as stream:
        assert (await stream.next())["body"] == "here"
        # bob's stream is open on this conversation: he will hear it now.
        assert (await open_chat(alice, "bob", "are you there?"))["targets_connected"] == ["bob"]
        carol = await agent("carol")
        other = await open_chat(carol, "bob", "another conversation")
        assert other["targets_connected"] == []

    async def stopped() -> bool:
        # Every conversation, read or not: who in it is waiting right now.
        found = ok(await alice.get("/v1/chat/sessions"), o.ChatListSessionsResponse)
        return all(
            "bob" not in c["waiting"] for c in found["sessions"] if c["session_id"] == session
        )

    await eventually(stopped)  # bob hung up: he listens no more
    assert (await open_chat(alice, "bob", "gone again"))["targets_connected"] == []


# -- 8. bdh :dashboard's link ---------------------------------------------------------------


async def test_the_link_bdh_dashboard_prints_serves_the_dashboard(
    hub_server: RunningHub, agent: NewAgent
):
    alice = await agent("alice")
    # bdh prints <hub>/#api_key=<key>; the fragment never reaches the hub.
    link = f"{hub_server.http_url}/#api_key={alice.agent['api_key']}"
    async with httpx.AsyncClient() as http:
        page = await http.get(link)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert alice.agent["api_key"].encode() not in page.request.url.raw_path
        script = await http.get(f"{hub_server.http_url}/app.js")
        assert script.status_code == 200
    # The page trades the key it read for a ticket (tests/browser signs in for real).
    ticket = await alice.http.post("/v1/auth/ticket", json={"api_key": alice.agent["api_key"]})
    assert ticket.status_code == 200 and ticket.json()["ticket"]


# -- 9. beads_in_progress includes the caller's own claims -------------------------------------


async def test_beads_in_progress_includes_the_callers_own_claims(agent: NewAgent):
    juan = await agent("alice-frontend", human_name="juan")
    ana = await agent("bob-backend", human_name="ana")

    def body(shim: Shim, **fields: Any) -> dict[str, Any]:
        return {
            "workspace_id": shim.id,
            "alias": shim.alias,
            "human_name": "",
            "repo_origin": "",
            **fields,
        }

    def line(bead: str, status: str) -> str:
        return (
            f'{{"id": "{bead}", "title": "{bead}", "status": "{status}", "priority": 1, '
            '"issue_type": "task", "created_at": "2025-11-30T00:00:00Z", '
            '"updated_at": "2025-11-30T00:00:00Z"}'
        )

    ok(
        await juan.post("/v1/bdh/sync", body(juan, issues_jsonl=line("bd-7", "in_progress"))),
        o.SyncResponse,
    )
    synced = ok(
        await ana.post(
            "/v1/bdh/sync",
            body(
                ana,
                sync_mode="incremental",
                changed_issues=line("bd-8", "in_progress"),
                deleted_ids=[],
            ),
        ),
        o.SyncResponse,
    )
    mine_and_theirs = {(b["bead_id"], b["alias"]) for b in synced["context"]["beads_in_progress"]}
    assert mine_and_theirs == {("bd-7", "alice-frontend"), ("bd-8", "bob-backend")}
    command = ok(
        await juan.post("/v1/bdh/command", body(juan, command_line="bdh ready")), o.CommandResponse
    )
    own = [b for b in command["context"]["beads_in_progress"] if b["workspace_id"] == juan.id]
    assert [(b["bead_id"], b["human_name"]) for b in own] == [("bd-7", "juan")]


# -- 10. listing projects without a key ----------------------------------------------------------


async def test_listing_projects_without_a_key_is_a_clear_401(
    hub_server: RunningHub, agent: NewAgent
):
    alice = await agent("alice")
    async with anonymous(hub_server) as http:
        refused = await http.get("/v1/projects")
        # bdh prints "BeadHub error (401): <body>": the body says what to do.
        detail = error(refused, 401)
        assert "api key" in detail and "projects" in detail
        assert alice.agent["project_slug"] not in refused.text
        deleting = await http.delete(f"/v1/projects/{alice.agent['project_id']}")
        error(deleting, 401)
    mine = ok(await alice.get("/v1/projects"), o.ListProjectsResponse)["projects"]
    assert [p["slug"] for p in mine] == [alice.agent["project_slug"]]


# -- 11. an unknown role -------------------------------------------------------------------------


async def test_an_unknown_role_is_a_400_naming_the_projects_roles(agent: NewAgent):
    # bdh :init outside a terminal and without --role takes the role "agent",
    # which the default policy lacks: bdh :policy then asks for it, and only a
    # 400 makes bdh say "role rejected by server (available roles: ...)".
    alice = await agent("alice")
    refused = await alice.get("/v1/policies/active", role="agent", only_selected="true")
    assert "agent" in error(refused, 400)
    roles = sorted(ok(await alice.get("/v1/policies/active"), o.ActivePolicyResponse)["roles"])
    assert refused.json()["data"]["roles"] == roles and "backend" in roles
    known = await alice.get("/v1/policies/active", role="Backend", only_selected="true")
    assert ok(known, o.ActivePolicyResponse)["selected_role"]["role"] == "backend"
