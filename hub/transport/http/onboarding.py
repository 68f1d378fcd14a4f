"""Health, onboarding, projects, repos and agent identity/presence."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from hub import __version__
from hub.services import auth, limits, presence, projects, repos, tickets
from hub.services.context import Actor
from hub.transport.http import inputs as i
from hub.transport.http import outputs as o
from hub.transport.http.base import ORJSONResponse, actor_of, client_address
from hub.transport.http.registry import HttpCall, api
from protocol.errors import unauthorized

TAG = "onboarding"
NOT_FOUND = {404: "not found in the caller's project"}


@api.get("/health", summary="Liveness", tag="health", auth=False, rate=None)
async def health(call: HttpCall) -> dict[str, Any]:
    return {
        "status": "ok",
        "version": __version__,
        "instance_id": call.hub.settings.instance_id,
    }


@api.get(
    "/ready", summary="Readiness: database and bus reachable", tag="health", auth=False, rate=None
)
async def ready(call: HttpCall) -> Response:
    database = await call.hub.store.ping()
    bus = await call.hub.bus.ping()
    ok = database and bus
    body = {
        "status": "ready" if ok else "unavailable",
        "database": "ok" if database else "unavailable",
        "bus": "ok" if bus else "unavailable",
        "instance_id": call.hub.settings.instance_id,
    }
    return ORJSONResponse(body, status_code=200 if ok else 503)


@api.post(
    "/v1/init",
    summary="Create or join a project and mint an agent's api key",
    tag=TAG,
    body=i.InitRequest,
    response=o.InitResponse,
    errors={
        401: "the credential sent as proof is not valid",
        403: "pending_validation: a human must admit the agent first (or join_refused)",
        409: "alias_exists: the alias is taken and no proof was sent",
    },
    auth=False,
    rate="onboarding",
)
async def init(call: HttpCall, body: i.InitRequest) -> dict[str, Any]:
    """No key needed for a new agent of an open project. Creates (or
    reuses) the project named by project_slug (or derived from
    repo_origin), the repo, an agent with an alias and its workspace;
    answers with the api key. Binding an existing alias needs proof in
    Authorization (that agent's key or a human's ticket); an invitation
    may ride there too."""
    client = call.request.client
    request = projects.InitRequest(
        **body.model_dump(), client_address=client.host if client else ""
    )
    token = auth.bearer_token(call.request.headers.get("authorization"))
    return await projects.init(call.hub, request, token)


@api.post(
    "/v1/auth/ticket",
    summary="Trade an agent's api key for a ticket to its own dashboard view",
    tag=TAG,
    body=i.TicketRequest,
    response=o.TicketResponse,
    errors={401: "the api key is not valid"},
    auth=False,
)
async def issue_ticket(call: HttpCall, body: i.TicketRequest) -> dict[str, Any]:
    # A refused key here counts like one in an Authorization header.
    address = client_address(call.request)
    return await limits.authenticated(
        call.hub, address, lambda: tickets.issue_for_agent(call.hub, body.api_key)
    )


@api.post(
    "/v1/auth/ticket/revoke",
    summary="Sign a dashboard ticket out: it stops working on every instance",
    tag=TAG,
    body=i.TicketRevokeRequest,
    response=o.TicketRevokeResponse,
    auth=False,
)
async def revoke_ticket(call: HttpCall, body: i.TicketRevokeRequest) -> dict[str, Any]:
    return await tickets.revoke(call.hub, body.ticket)


@api.get(
    "/v1/auth/introspect",
    summary="Who this api key is",
    tag=TAG,
    response=o.IntrospectResponse,
)
async def introspect(call: HttpCall) -> dict[str, Any]:
    return await projects.introspect(call.hub, call.actor)


# -- projects ------------------------------------------------------------------------


@api.post(
    "/v1/projects/ensure",
    summary="The key's project, by slug",
    tag=TAG,
    body=i.EnsureProjectRequest,
    response=o.EnsureProjectResponse,
    errors={403: "the slug names another project"},
)
async def ensure_project(call: HttpCall, body: i.EnsureProjectRequest) -> dict[str, Any]:
    return await projects.ensure_own(call.hub, call.actor, body.slug)


#: bdh's ``:projects`` sends no key and prints this body as it is.
PROJECTS_NEED_A_KEY = (
    "listing projects needs an api key (Authorization: Bearer aw_sk_...): this hub "
    "shows a key its own project only, and never lists projects to anonymous callers. "
    "In a bdh workspace, `bdh :status` shows your project."
)


@api.get(
    "/v1/projects",
    summary="The projects this key can see (its own); 401 without a key",
    tag=TAG,
    response=o.ListProjectsResponse,
    errors={401: "no api key: a clear message, never the project list"},
    auth=False,
)
async def list_projects(call: HttpCall) -> dict[str, Any]:
    if auth.bearer_token(call.request.headers.get("authorization")) is None:
        raise unauthorized(PROJECTS_NEED_A_KEY)
    actor = await actor_of(call.request)
    return {"projects": await projects.list_own(call.hub, actor)}


@api.get(
    "/v1/projects/current",
    summary="The key's project",
    tag=TAG,
    response=o.ProjectResponse,
)
async def current_project(call: HttpCall) -> dict[str, Any]:
    return await projects.get(call.hub, call.actor.project_id)


@api.delete(
    "/v1/projects/{project_id}",
    summary="Delete the key's project and everything in it",
    tag=TAG,
    response=o.DeleteProjectResponse,
    errors=NOT_FOUND,
    human=True,
)
async def delete_project(call: HttpCall) -> dict[str, Any]:
    return await projects.delete(call.hub, call.actor, call.path("project_id"))


# -- repos -----------------------------------------------------------------------------


@api.post(
    "/v1/repos/ensure",
    summary="Register a repo of the key's project by its git origin",
    tag=TAG,
    body=i.EnsureRepoRequest,
    response=o.EnsureRepoResponse,
    errors=NOT_FOUND,
)
async def ensure_repo(call: HttpCall, body: i.EnsureRepoRequest) -> dict[str, Any]:
    return await projects.ensure_repo(call.hub, call.actor, body.project_id, body.origin_url)


@api.post(
    "/v1/repos/lookup",
    summary="Find a repo of the key's project by its git origin",
    tag=TAG,
    body=i.LookupRepoRequest,
    response=o.LookupRepoResponse,
    errors=NOT_FOUND,
)
async def lookup_repo(call: HttpCall, body: i.LookupRepoRequest) -> dict[str, Any]:
    return await repos.lookup(call.hub, body.origin_url, project_id=call.actor.project_id)


# -- workspaces and agents -----------------------------------------------------------------


@api.post(
    "/v1/workspaces/register",
    summary="Attach the key's workspace to a repo",
    tag=TAG,
    body=i.RegisterWorkspaceRequest,
    response=o.RegisterWorkspaceResponse,
)
async def register_workspace(call: HttpCall, body: i.RegisterWorkspaceRequest) -> dict[str, Any]:
    return await projects.register_workspace(
        call.hub,
        call.actor,
        body.repo_origin,
        role=body.role,
        hostname=body.hostname,
        workspace_path=body.workspace_path,
    )


async def _anonymous_or_key(call: HttpCall) -> Actor | None:
    """bdh asks for names before it has a key (and sometimes with one): a
    key, if sent, must be valid. Limited per address like every route
    without a key (the registry's ``anonymous`` rule)."""
    if auth.bearer_token(call.request.headers.get("authorization")) is None:
        return None
    return await actor_of(call.request)


@api.post(
    "/v1/workspaces/suggest-name-prefix",
    summary="The next free name prefix for a new workspace of a repo (no key needed)",
    tag=TAG,
    body=i.SuggestNamePrefixRequest,
    response=o.SuggestNamePrefixResponse,
    errors={
        404: "no project has the repo (with a key: the key's project has not)",
        429: "too many requests from this address",
    },
    auth=False,
)
async def suggest_name_prefix(call: HttpCall, body: i.SuggestNamePrefixRequest) -> dict[str, Any]:
    actor = await _anonymous_or_key(call)
    return await projects.suggest_name_prefix(call.hub, actor, body.origin_url)


@api.post(
    "/v1/agents/suggest-alias-prefix",
    summary="The next free alias prefix in a project (no key needed)",
    tag=TAG,
    body=i.SuggestAliasPrefixRequest,
    response=o.SuggestAliasPrefixResponse,
    errors={429: "too many requests from this address"},
    auth=False,
)
async def suggest_alias_prefix(call: HttpCall, body: i.SuggestAliasPrefixRequest) -> dict[str, Any]:
    await _anonymous_or_key(call)
    return await projects.suggest_alias_prefix(call.hub, body.project_slug)


@api.post(
    "/v1/agents/register",
    summary="Refresh the workspace's presence (HTTP heartbeat with details)",
    tag=TAG,
    body=i.RefreshPresenceRequest,
    response=o.RefreshPresenceResponse,
    errors={403: "workspace_id is another agent's", 404: "unknown workspace_id"},
)
async def refresh_presence(call: HttpCall, body: i.RefreshPresenceRequest) -> dict[str, Any]:
    """The agent stays online for ttl_seconds (default 300) after each call."""
    await presence.require_self(call.hub, call.actor, body.workspace_id)
    fields = body.model_dump(include=set(presence.UPDATABLE))
    beat = await presence.heartbeat(call.hub, call.actor, body.ttl_seconds, fields)
    return {"agent": beat["agent"], "workspace": beat["agent"], "ttl_seconds": beat["ttl_seconds"]}


@api.post(
    "/v1/agents/heartbeat",
    summary="Keep the key's agent online",
    tag=TAG,
    response=o.HeartbeatResponse,
)
async def heartbeat(call: HttpCall) -> dict[str, Any]:
    beat = await presence.heartbeat(call.hub, call.actor)
    return {
        "agent_id": beat["agent"]["agent_id"],
        "last_seen": beat["last_seen"],
        "ttl_seconds": beat["ttl_seconds"],
    }


@api.get(
    "/v1/agents",
    summary="The project's agents and who is online",
    tag=TAG,
    response=o.ListAgentsResponse,
)
async def list_agents(call: HttpCall) -> dict[str, Any]:
    agents = await presence.list_agents(call.hub, call.actor.project_id)
    return {"project_id": call.actor.project_id, "agents": agents}
