"""Workspaces, the team view and status."""

from __future__ import annotations

from typing import Any

from hub.services import status, workspaces
from hub.transport.http import inputs as i
from hub.transport.http import outputs as o
from hub.transport.http.registry import HttpCall, api
from protocol.errors import not_found

TAG = "team"


@api.get(
    "/v1/workspaces",
    summary="The project's workspaces, filtered",
    tag=TAG,
    query=i.WorkspacesQuery,
    response=o.WorkspacesResponse,
)
async def list_workspaces(call: HttpCall, query: i.WorkspacesQuery) -> dict[str, Any]:
    found = await workspaces.list_(
        call.hub,
        call.actor,
        workspaces.Filters(
            human_name=query.human_name,
            repo=query.repo,
            alias=query.alias,
            hostname=query.hostname,
            include_deleted=query.include_deleted,
        ),
        include_claims=query.include_claims,
        include_presence=query.include_presence,
        limit=query.limit,
    )
    return {"workspaces": found, "count": len(found)}


@api.get(
    "/v1/workspaces/team",
    summary="A bounded team view: who holds claims, who is online",
    tag=TAG,
    query=i.TeamWorkspacesQuery,
    response=o.WorkspacesResponse,
)
async def team_workspaces(call: HttpCall, query: i.TeamWorkspacesQuery) -> dict[str, Any]:
    found = await workspaces.team(
        call.hub,
        call.actor,
        workspaces.Filters(human_name=query.human_name, repo=query.repo),
        include_claims=query.include_claims,
        include_presence=query.include_presence,
        only_with_claims=query.only_with_claims,
        always_include=query.always_include_workspace_id,
        limit=query.limit,
    )
    return {"workspaces": found, "count": len(found)}


@api.delete(
    "/v1/workspaces/{workspace_id}",
    summary="Soft-delete a workspace of the key's project",
    tag=TAG,
    response=o.DeleteWorkspaceResponse,
    errors={404: "unknown, already deleted or another project's"},
)
async def delete_workspace(call: HttpCall) -> dict[str, Any]:
    return await workspaces.delete(call.hub, call.actor, call.path("workspace_id"))


def _status_agent(agent: dict[str, Any]) -> dict[str, Any]:
    """bdh's StatusAgent, on top of the presence view."""
    return {
        **agent,
        "member": agent.get("human_name") or "",
        "program": agent.get("program") or "",
        "current_locks": agent.get("current_locks") or [],
        "current_issue": agent.get("current_issue") or "",
    }


@api.get(
    "/v1/status",
    summary="The team at a glance",
    tag=TAG,
    query=i.StatusQuery,
    response=o.StatusResponse,
    errors={404: "workspace_id is not in the key's project"},
)
async def get_status(call: HttpCall, query: i.StatusQuery) -> dict[str, Any]:
    result = await status.get(call.hub, call.actor)
    agents = result["agents"]
    if query.workspace_id:
        me = next((a for a in agents if a["agent_id"] == query.workspace_id), None)
        if me is None:
            raise not_found(f"workspace {query.workspace_id} not found")
        result["workspace"] = me
    if query.repo:
        agents = [a for a in agents if query.repo in (a.get("repo"), a.get("canonical_origin"))]
    return {
        **result,
        "agents": [_status_agent(a) for a in agents],
        "locks": result.get("locks", []),
        "escalations_pending": result.get("escalations_pending", 0),
    }
