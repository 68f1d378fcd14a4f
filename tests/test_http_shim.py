"""The bdh HTTP shim, call by call: the request bodies bdh and the aw
library send (see the bdh contract), against a real server, checking the
fields and types each client reads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from hub.transport.http import outputs as o
from tests.shim import Shim, bdh_init_body, error, ok
from tests.support import RunningHub, sign_in_human, unique

NewAgent = Callable[..., Awaitable[Shim]]


# -- onboarding ----------------------------------------------------------------------


async def test_init_answers_bdh_and_the_aw_library(hub_server: RunningHub, slug: str):
    async with httpx.AsyncClient(base_url=hub_server.http_url) as client:
        bdh = ok(await client.post("/v1/init", json=bdh_init_body(slug, "alice")), o.InitResponse)
        assert bdh["alias"] == "alice" and bdh["project_slug"] == slug
        assert bdh["created"] and bdh["workspace_created"]
        assert bdh["workspace_id"] == bdh["agent_id"]
        assert bdh["canonical_origin"] == "github.com/acme/widgets" and bdh["repo_id"]
        assert bdh["api_key"].startswith("aw_sk_") and bdh["status"] == "ok"

        aw_body = {
            "project_slug": slug,
            "project_name": "Widgets",
            "alias": "bob",
            "human_name": "Ana",
            "agent_type": "agent",
        }
        aw = ok(await client.post("/v1/init", json=aw_body), o.InitResponse)
        assert aw["project_id"] == bdh["project_id"] and aw["alias"] == "bob"

        # The alias again with its key as proof: the same agent, not a new one.
        again = ok(
            await client.post(
                "/v1/init",
                json=bdh_init_body(slug, "alice", workspace_path="/elsewhere"),
                headers={"Authorization": f"Bearer {bdh['api_key']}"},
            ),
            o.InitResponse,
        )
        assert again["agent_id"] == bdh["agent_id"] and not again["created"]
        # Without proof, even from the very same workspace: refused, as bdh reads it.
        same_place = bdh_init_body(slug, "alice")
        assert "alias_exists" in error(await client.post("/v1/init", json=same_place), 409)


async def test_init_without_an_alias_suggests_one_from_the_role(hub_server, slug):
    async with httpx.AsyncClient(base_url=hub_server.http_url) as client:
        body = bdh_init_body(slug, "x", role="frontend")
        del body["alias"]
        first = ok(await client.post("/v1/init", json=body), o.InitResponse)
        body["workspace_path"] = "/src/other"
        second = ok(await client.post("/v1/init", json=body), o.InitResponse)
    assert first["alias"] == "alice-frontend" and second["alias"] == "bob-frontend"


async def test_identity_calls(agent: NewAgent, slug: str):
    alice = await agent("alice")
    me = ok(await alice.get("/v1/auth/introspect"), o.IntrospectResponse)
    assert me["agent_id"] == alice.id and me["alias"] == "alice"
    assert me["project_id"] == alice.agent["project_id"] and me["human_name"] == "Juan"
    assert me["agent_type"] == "agent"

    project = ok(await alice.get("/v1/projects/current"), o.ProjectResponse)
    assert project == {**project, "project_id": me["project_id"], "slug": slug}

    ensured = ok(await alice.post("/v1/projects/ensure", {"slug": slug}), o.EnsureProjectResponse)
    assert ensured == {"project_id": me["project_id"], "slug": slug, "created": False}
    # A key cannot create or reach another project by slug.
    other = unique("other")
    error(await alice.post("/v1/projects/ensure", {"slug": other}), 403)


async def test_list_projects_shows_only_the_callers_project(agent: NewAgent, slug: str):
    alice = await agent("alice")
    await agent("bob")
    await agent("mallory", project=unique("other"))
    listed = ok(await alice.get("/v1/projects"), o.ListProjectsResponse)["projects"]
    assert [(p["slug"], p["repo_count"], p["workspace_count"]) for p in listed] == [(slug, 1, 2)]
    assert listed[0]["id"] == alice.agent["project_id"]


async def test_repos_ensure_and_lookup_by_any_spelling_of_the_origin(agent: NewAgent):
    alice = await agent("alice")
    project_id = alice.agent["project_id"]
    same = ok(
        await alice.post(
            "/v1/repos/ensure",
            {"project_id": project_id, "origin_url": "https://github.com/acme/widgets"},
        ),
        o.EnsureRepoResponse,
    )
    assert same["repo_id"] == alice.agent["repo_id"] and not same["created"]
    new = ok(
        await alice.post(
            "/v1/repos/ensure",
            {"project_id": project_id, "origin_url": "git@github.com:acme/gadgets.git"},
        ),
        o.EnsureRepoResponse,
    )
    assert new["created"] and new["name"] == "gadgets"
    assert new["canonical_origin"] == "github.com/acme/gadgets"

    found = ok(
        await alice.post("/v1/repos/lookup", {"origin_url": "ssh://git@github.com/acme/gadgets"}),
        o.LookupRepoResponse,
    )
    assert found["repo_id"] == new["repo_id"] and found["project_id"] == project_id
    assert found["name"] == "gadgets" and found["project_slug"] == alice.agent["project_slug"]
    error(await alice.post("/v1/repos/lookup", {"origin_url": "github.com/acme/none"}), 404)


async def test_repos_of_another_project_are_not_found(agent: NewAgent):
    alice = await agent("alice")
    mallory = await agent("mallory", project=unique("other"), repo_origin="git@x.org:m/secret")
    body = {"project_id": alice.agent["project_id"], "origin_url": "git@x.org:m/evil"}
    error(await mallory.post("/v1/repos/ensure", body), 404)
    # Mallory's repo exists, but not in alice's project.
    error(await alice.post("/v1/repos/lookup", {"origin_url": "git@x.org:m/secret"}), 404)
    listed = ok(await alice.get("/v1/projects"), o.ListProjectsResponse)["projects"]
    assert listed[0]["repo_count"] == 1


async def test_register_workspace_and_name_suggestions(agent: NewAgent, slug: str):
    alice = await agent("alice")
    body = {
        "repo_origin": "git@github.com:acme/gadgets.git",
        "role": "backend",
        "hostname": "box",
        "workspace_path": "/src/gadgets",
    }
    registered = ok(await alice.post("/v1/workspaces/register", body), o.RegisterWorkspaceResponse)
    assert registered["workspace_id"] == alice.id and registered["alias"] == "alice"
    assert registered["canonical_origin"] == "github.com/acme/gadgets"
    assert registered["project_slug"] == slug and registered["human_name"] == "Juan"
    listed = ok(await alice.get("/v1/workspaces"), o.WorkspacesResponse)["workspaces"]
    assert (listed[0]["role"], listed[0]["hostname"], listed[0]["repo"]) == (
        "backend",
        "box",
        "gadgets",
    )

    prefix = ok(
        await alice.post(
            "/v1/workspaces/suggest-name-prefix", {"origin_url": "https://github.com/acme/gadgets"}
        ),
        o.SuggestNamePrefixResponse,
    )
    # alice is taken: the next first name.
    assert prefix["name_prefix"] == "bob" and prefix["repo_id"] == registered["repo_id"]
    unknown = {"origin_url": "https://github.com/acme/unknown"}
    error(await alice.post("/v1/workspaces/suggest-name-prefix", unknown), 404)

    alias = ok(
        await alice.post("/v1/agents/suggest-alias-prefix", {"project_slug": slug}),
        o.SuggestAliasPrefixResponse,
    )
    assert alias == {
        "project_slug": slug,
        "project_id": alice.agent["project_id"],
        "name_prefix": "bob",
    }
    other = unique("other")
    elsewhere = ok(
        await alice.post("/v1/agents/suggest-alias-prefix", {"project_slug": other}),
        o.SuggestAliasPrefixResponse,
    )
    assert elsewhere["project_id"] is None


# -- presence -------------------------------------------------------------------------------


def _refresh_body(shim: Shim, **extra: Any) -> dict[str, Any]:
    """bdh's RefreshPresenceRequest."""
    return {
        "workspace_id": shim.id,
        "alias": shim.alias,
        "human_name": "Juan",
        "project_id": shim.agent["project_id"],
        "project_slug": shim.agent["project_slug"],
        "repo_id": shim.agent["repo_id"],
        "repo_origin": "git@github.com:acme/widgets.git",
        "canonical_origin": "github.com/acme/widgets",
        "hostname": "laptop",
        "workspace_path": "/src/widgets",
        "program": "claude-code",
        "model": "opus",
        "repo": "widgets",
        "branch": "feat/api",
        "role": "backend",
        "ttl_seconds": 120,
        **extra,
    }


async def test_an_http_agent_is_online_while_it_refreshes(agent: NewAgent, connect):
    alice, bob = await agent("alice"), await agent("bob")
    watcher = await connect(alice.agent)

    refreshed = ok(
        await bob.post("/v1/agents/register", _refresh_body(bob)), o.RefreshPresenceResponse
    )
    assert refreshed["agent"]["online"] and refreshed["workspace"]["branch"] == "feat/api"
    # The WebSocket agent sees the HTTP agent come online, with its details.
    event = await watcher.next_event(
        "presence", where=lambda e: e["data"]["alias"] == "bob", timeout=2
    )
    assert event["data"]["online"] and event["data"]["program"] == "claude-code"

    agents = ok(await alice.get("/v1/agents"), o.ListAgentsResponse)
    assert agents["project_id"] == alice.agent["project_id"]
    online = {a["alias"]: a["online"] for a in agents["agents"]}
    assert online == {"alice": True, "bob": True}

    beat = ok(await bob.post("/v1/agents/heartbeat"), o.HeartbeatResponse)
    assert beat["agent_id"] == bob.id and beat["ttl_seconds"] == 300 and beat["last_seen"]


async def test_refresh_presence_cannot_speak_for_another_workspace(agent: NewAgent, slug):
    alice, bob = await agent("alice"), await agent("bob")
    mallory = await agent("mallory", project=unique("other"))
    error(await bob.post("/v1/agents/register", _refresh_body(bob, workspace_id=alice.id)), 403)
    error(await bob.post("/v1/agents/register", _refresh_body(bob, workspace_id=mallory.id)), 404)
    agents = ok(await alice.get("/v1/agents"), o.ListAgentsResponse)["agents"]
    assert {a["alias"]: a["online"] for a in agents} == {"alice": False, "bob": False}


# -- workspaces ------------------------------------------------------------------------------


async def test_workspaces_filters(agent: NewAgent, slug: str):
    alice = await agent("alice", human_name="Juan", hostname="laptop")
    await agent("bob", human_name="Ana", hostname="desk")
    await agent("carol", human_name="Ana", hostname="laptop", repo_origin="git@h.io:acme/gadgets")

    async def aliases(**params: Any) -> list[str]:
        answer = ok(await alice.get("/v1/workspaces", **params), o.WorkspacesResponse)
        assert answer["count"] == len(answer["workspaces"])
        return [w["alias"] for w in answer["workspaces"]]

    assert await aliases() == ["alice", "bob", "carol"]
    assert await aliases(human_name="Ana") == ["bob", "carol"]
    assert await aliases(hostname="laptop") == ["alice", "carol"]
    assert await aliases(alias="bob") == ["bob"]
    assert await aliases(repo="gadgets") == ["carol"]
    assert await aliases(repo="https://h.io/acme/gadgets.git") == ["carol"]
    assert await aliases(limit=2) == ["alice", "bob"]
    assert await aliases(include_claims="true", include_presence="false") == [
        "alice",
        "bob",
        "carol",
    ]
    one = ok(await alice.get("/v1/workspaces", alias="alice"), o.WorkspacesResponse)
    assert one["workspaces"][0]["project_slug"] == slug and one["workspaces"][0]["claims"] == []
    error(await alice.get("/v1/workspaces", limit="many"), 422)


async def test_team_view_puts_online_agents_first_and_keeps_the_caller(agent: NewAgent):
    alice, bob, carol = await agent("alice"), await agent("bob"), await agent("carol")
    await carol.post("/v1/agents/heartbeat")
    team = ok(await alice.get("/v1/workspaces/team", limit=1), o.WorkspacesResponse)
    assert [w["alias"] for w in team["workspaces"]] == ["carol"]
    team = ok(
        await alice.get("/v1/workspaces/team", limit=1, always_include_workspace_id=bob.id),
        o.WorkspacesResponse,
    )
    assert [w["alias"] for w in team["workspaces"]] == ["carol", "bob"]
    team = ok(await alice.get("/v1/workspaces/team", only_with_claims="true"), o.WorkspacesResponse)
    assert team["workspaces"] == [] and team["count"] == 0


async def test_delete_workspace_is_soft_and_scoped(agent: NewAgent):
    alice, bob = await agent("alice"), await agent("bob")
    mallory = await agent("mallory", project=unique("other"))

    error(await mallory.delete(f"/v1/workspaces/{bob.id}"), 404)
    error(await alice.delete("/v1/workspaces/not-a-workspace"), 404)

    deleted = ok(await alice.delete(f"/v1/workspaces/{bob.id}"), o.DeleteWorkspaceResponse)
    assert deleted["workspace_id"] == bob.id and deleted["alias"] == "bob" and deleted["deleted_at"]
    error(await alice.delete(f"/v1/workspaces/{bob.id}"), 404)
    # bob's key stops working; the workspace stays for history.
    error(await bob.get("/v1/status"), 401)
    listed = ok(await alice.get("/v1/workspaces"), o.WorkspacesResponse)["workspaces"]
    assert [w["alias"] for w in listed] == ["alice"]
    listed = ok(await alice.get("/v1/workspaces", include_deleted="true"), o.WorkspacesResponse)
    assert {w["alias"]: w["status"] for w in listed["workspaces"]}["bob"] == "deleted"


# -- status ----------------------------------------------------------------------------------


async def test_status_lists_the_team(agent: NewAgent):
    alice = await agent("alice")
    bob = await agent("bob", repo_origin="git@github.com:acme/gadgets.git")
    await bob.post("/v1/agents/register", _refresh_body(bob, repo="gadgets", role="frontend"))
    status = ok(await alice.get("/v1/status", workspace_id=alice.id), o.StatusResponse)
    assert status["workspace"]["alias"] == "alice" and status["timestamp"]
    agents = {a["alias"]: a for a in status["agents"]}
    assert agents["bob"]["status"] == "online" and agents["bob"]["member"] == "Juan"
    assert agents["bob"]["program"] == "claude-code" and agents["bob"]["role"] == "frontend"
    assert agents["alice"]["status"] == "offline"
    only = ok(await alice.get("/v1/status", repo="gadgets"), o.StatusResponse)
    assert [a["alias"] for a in only["agents"]] == ["bob"]
    mallory = await agent("mallory", project=unique("other"))
    error(await mallory.get("/v1/status", workspace_id=alice.id), 404)


# -- deleting a project ------------------------------------------------------------------------


async def test_delete_project_only_the_callers_own(
    hub_server: RunningHub, agent: NewAgent, connect
):
    alice, bob = await agent("alice"), await agent("bob")
    mallory = await agent("mallory", project=unique("other"))
    project_id = alice.agent["project_id"]
    error(await mallory.delete(f"/v1/projects/{project_id}"), 404)
    ok(await alice.get("/v1/status"), o.StatusResponse)

    working = {
        "workspace_id": alice.id,
        "alias": "alice",
        "human_name": "Juan",
        "repo_origin": "git@github.com:acme/widgets.git",
        "issues_jsonl": '{"id": "bd-1", "title": "x", "status": "in_progress"}',
    }
    ok(await alice.post("/v1/bdh/sync", working), o.SyncResponse)
    mail = {"to_alias": "bob", "subject": "hi", "body": "before the end"}
    ok(await alice.post("/v1/messages", mail), o.SendMessageResponse)
    lock = {"workspace_id": alice.id, "paths": ["src/api.py"]}
    ok(await alice.post("/v1/reservations", lock), o.LockResponse)
    # bob is online twice over (HTTP heartbeat and a socket): one agent.
    await bob.post("/v1/agents/heartbeat")
    await connect(bob.agent)
    # Deleting the project is a human's call, not an agent's.
    error(await alice.delete(f"/v1/projects/{project_id}"), 403)
    human = await sign_in_human(hub_server, alice.agent["project_slug"])
    as_human = {"Authorization": f"Bearer {human['ticket']}"}
    deleted = await alice.http.delete(f"/v1/projects/{project_id}", headers=as_human)
    gone = ok(deleted, o.DeleteProjectResponse)
    assert gone["id"] == project_id
    counts = ("repos_deleted", "workspaces_deleted", "claims_deleted", "presence_cleared")
    assert [gone[k] for k in counts] == [1, 2, 1, 1]
    error(await alice.get("/v1/status"), 401)
    error(await bob.get("/v1/agents"), 401)
    error(await alice.http.get("/v1/status", headers=as_human), 401)
    ok(await mallory.get("/v1/status"), o.StatusResponse)
    # Nothing of the project is left behind, foreign key or not.
    store = hub_server.hub.store
    tables = ("events", "mail_messages", "mail_deliveries", "reservations", "agents", "claims")
    for table in tables:
        left = await store.fetchval(
            f"SELECT count(*) FROM {table} WHERE project_id = $1", project_id
        )
        assert left == 0, table


# -- bad input -----------------------------------------------------------------------------------


async def test_every_call_but_init_needs_a_valid_key(hub_server: RunningHub, agent: NewAgent):
    alice = await agent("alice")
    anonymous = Shim(hub_server.http_url)
    forged = Shim(hub_server.http_url, {"api_key": "bh_not-a-key"})
    try:
        for shim in (anonymous, forged):
            refused = await shim.get("/v1/status")
            error(refused, 401)
            assert refused.headers["www-authenticate"] == "Bearer"
            error(await shim.post("/v1/repos/lookup", {"origin_url": "x"}), 401)
            error(await shim.delete(f"/v1/workspaces/{alice.id}"), 401)
        basic = await anonymous.http.get("/v1/agents", headers={"Authorization": "Basic abc"})
        error(basic, 401)
    finally:
        await anonymous.close()
        await forged.close()
    listed = ok(await alice.get("/v1/workspaces"), o.WorkspacesResponse)
    assert listed["count"] == 1


async def test_bad_bodies_get_json_errors_and_write_nothing(agent: NewAgent):
    alice = await agent("alice")
    project_id = alice.agent["project_id"]
    # Missing field, wrong type, not JSON, not an object.
    error(await alice.post("/v1/repos/ensure", {"project_id": project_id}), 422)
    detail = error(
        await alice.post("/v1/repos/ensure", {"project_id": project_id, "origin_url": 42}), 422
    )
    assert "origin_url" in detail
    raw = await alice.http.post(
        "/v1/repos/ensure", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    error(raw, 400)
    error(await alice.post("/v1/repos/ensure", ["git@x:y/z"]), 422)
    error(await alice.post("/v1/agents/register", {"workspace_id": alice.id}), 422)
    error(await alice.post("/v1/agents/register", _refresh_body(alice, ttl_seconds="soon")), 422)
    error(await alice.post("/v1/init", {"project_slug": "Not A Slug!"}), 422)
    listed = ok(await alice.get("/v1/projects"), o.ListProjectsResponse)["projects"]
    assert listed[0]["repo_count"] == 1
    agents = ok(await alice.get("/v1/agents"), o.ListAgentsResponse)["agents"]
    assert [a["online"] for a in agents] == [False]


async def test_unknown_ids_in_paths_are_not_found(agent: NewAgent):
    alice = await agent("alice")
    error(await alice.delete("/v1/projects/00000000-0000-0000-0000-000000000000"), 404)
    error(await alice.delete("/v1/projects/garbage"), 404)
    error(await alice.delete("/v1/workspaces/00000000-0000-0000-0000-000000000000"), 404)


# -- the OpenAPI document ---------------------------------------------------------------

CONTRACT_ROUTES = [
    ("post", "/v1/bdh/command"),
    ("post", "/v1/bdh/sync"),
    ("post", "/v1/projects/ensure"),
    ("post", "/v1/init"),
    ("get", "/v1/projects"),
    ("delete", "/v1/projects/{project_id}"),
    ("post", "/v1/repos/ensure"),
    ("post", "/v1/repos/lookup"),
    ("post", "/v1/agents/register"),
    ("post", "/v1/workspaces/register"),
    ("post", "/v1/workspaces/suggest-name-prefix"),
    ("post", "/v1/agents/suggest-alias-prefix"),
    ("get", "/v1/messages/inbox"),
    ("post", "/v1/messages/{message_id}/ack"),
    ("post", "/v1/messages"),
    ("delete", "/v1/workspaces/{workspace_id}"),
    ("get", "/v1/workspaces"),
    ("get", "/v1/workspaces/team"),
    ("get", "/v1/policies/active"),
    ("post", "/v1/policies/reset"),
    ("get", "/v1/status"),
    ("post", "/v1/escalations"),
    ("post", "/v1/reservations"),
    ("post", "/v1/reservations/renew"),
    ("post", "/v1/reservations/release"),
    ("post", "/v1/reservations/revoke"),
    ("get", "/v1/reservations"),
    ("get", "/v1/agents"),
    ("post", "/v1/agents/heartbeat"),
    ("get", "/v1/auth/introspect"),
    ("post", "/v1/chat/sessions"),
    ("get", "/v1/chat/sessions"),
    ("get", "/v1/chat/pending"),
    ("get", "/v1/chat/sessions/{session_id}/messages"),
    ("post", "/v1/chat/sessions/{session_id}/messages"),
    ("post", "/v1/chat/sessions/{session_id}/read"),
    ("get", "/v1/chat/sessions/{session_id}/stream"),
    ("get", "/v1/projects/current"),
]


async def test_openapi_documents_every_shim_route(hub_server: RunningHub):
    async with httpx.AsyncClient(base_url=hub_server.http_url) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    documented = {(verb, path) for path, ops in doc["paths"].items() for verb in ops}
    missing = [route for route in CONTRACT_ROUTES if route not in documented]
    assert missing == []
    lock = doc["paths"]["/v1/reservations"]["post"]["requestBody"]["content"]["application/json"]
    shapes = {ref["$ref"].rsplit("/", 1)[1] for ref in lock["schema"]["oneOf"]}
    assert shapes == {"LockRequest", "ReservationAcquireRequest"}
    schemas = doc["components"]["schemas"]
    assert "paths" in schemas["LockRequest"]["required"]
    assert schemas["ReservationAcquireRequest"]["required"] == ["resource_key"]
    inbox = doc["paths"]["/v1/messages/inbox"]["get"]
    assert {p["name"] for p in inbox["parameters"]} >= {"workspace_id", "limit", "unread_only"}
    status = doc["paths"]["/v1/status"]["get"]
    assert status["security"] == [{"bearerAuth": []}]
    assert "current_locks" in str(schemas["StatusAgent"])
