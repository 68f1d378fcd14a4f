"""Workspaces as bdh sees them: one per agent (a git worktree with a coding
agent in it), with presence and the Beads issues it has claimed.

An agent's id is also its workspace id. Deleting a workspace is a soft
delete: the row stays for history, its keys stop working, and it leaves
every listing unless ``include_deleted`` is asked for.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import asyncpg

from hub.services import beads, claims, events, repos, reservations, revocation
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from protocol.errors import RpcError, forbidden, not_found

_COLUMNS = """
    a.id, a.alias, a.human_name, a.role, a.agent_type, a.program, a.model, a.repo, a.branch,
    a.focus, a.focus_updated_at, a.hostname, a.workspace_path, a.last_seen, a.created_at,
    a.deleted_at, (a.http_online_until > now()) AS http_online,
    r.id AS repo_id, r.canonical_origin
"""


@dataclass(slots=True)
class Filters:
    human_name: str = ""
    repo: str = ""
    alias: str = ""
    hostname: str = ""
    include_deleted: bool = False


def _repo_keys(repo: str) -> list[str]:
    """A repo filter matches the repo's name or its canonical origin, given
    in any spelling git accepts."""
    keys = [repo]
    with contextlib.suppress(RpcError):
        keys.append(repos.canonical_origin(repo))
    return keys


async def _rows(hub: Hub, project_id: str, f: Filters) -> list[asyncpg.Record]:
    return await hub.store.fetch(
        f"""
        SELECT {_COLUMNS} FROM agents a LEFT JOIN repos r ON r.id = a.repo_id
        WHERE a.project_id = $1 AND a.alias NOT LIKE 'human:%'
          AND ($2 = '' OR a.human_name = $2)
          AND ($3::text[] IS NULL OR a.repo = ANY($3) OR r.name = ANY($3)
               OR r.canonical_origin = ANY($3))
          AND ($4 = '' OR a.alias = $4)
          AND ($5 = '' OR a.hostname = $5)
          AND ($6 OR a.deleted_at IS NULL)
        ORDER BY a.alias
        """,
        project_id,
        f.human_name,
        _repo_keys(f.repo) if f.repo else None,
        f.alias,
        f.hostname,
        f.include_deleted,
    )


def _view(
    row: asyncpg.Record,
    project_slug: str,
    online: set[str],
    held: list[dict[str, Any]] | None,
    include_presence: bool,
) -> dict[str, Any]:
    if row["deleted_at"] is not None:
        status = "deleted"
    elif not include_presence:
        status = "unknown"
    else:
        status = "online" if row["id"] in online or row["http_online"] else "offline"
    held = held or []
    # The newest claim is what the workspace is focused on.
    focus = held[0] if held else {}
    return {
        "workspace_id": row["id"],
        "agent_id": row["id"],
        "alias": row["alias"],
        "human_name": row["human_name"],
        "project_slug": project_slug,
        "role": row["role"],
        "agent_type": row["agent_type"],
        "program": row["program"],
        "model": row["model"],
        "hostname": row["hostname"],
        "workspace_path": row["workspace_path"],
        "repo": row["repo"],
        "repo_id": row["repo_id"],
        "canonical_origin": row["canonical_origin"],
        "branch": row["branch"],
        "focus": row["focus"],
        "focus_updated_at": focus.get("claimed_at") or iso(row["focus_updated_at"]),
        "apex_id": focus.get("apex_id"),
        "apex_title": focus.get("apex_title"),
        "apex_type": focus.get("apex_type"),
        "focus_apex_id": focus.get("apex_id"),
        "focus_apex_title": focus.get("apex_title"),
        "focus_apex_type": focus.get("apex_type"),
        "focus_apex_repo_name": row["repo"] if focus else None,
        "focus_apex_branch": row["branch"] if focus else None,
        "status": status,
        "online": status == "online",
        "last_seen": iso(row["last_seen"]),
        "created_at": iso(row["created_at"]),
        "deleted_at": iso(row["deleted_at"]),
        "claims": held,
    }


async def list_(
    hub: Hub,
    actor: Actor,
    filters: Filters,
    *,
    include_claims: bool = False,
    include_presence: bool = True,
    limit: int = 200,
) -> list[dict[str, Any]]:
    rows = await _rows(hub, actor.project_id, filters)
    online = await hub.bus.online_agents(actor.project_id) if include_presence else set()
    held = await claims.by_agent(hub, actor.project_id) if include_claims else {}
    return [
        _view(r, actor.project_slug, online, held.get(r["id"]), include_presence)
        for r in rows[:limit]
    ]


async def team(
    hub: Hub,
    actor: Actor,
    filters: Filters,
    *,
    include_claims: bool = True,
    include_presence: bool = True,
    only_with_claims: bool = False,
    always_include: str = "",
    limit: int = 50,
) -> list[dict[str, Any]]:
    """A bounded view of the team: workspaces holding claims first, then
    those online, then the most recently seen. ``always_include`` (the
    caller's own workspace, usually) is kept even past the limit."""
    rows = await _rows(hub, actor.project_id, Filters(filters.human_name, filters.repo))
    online = await hub.bus.online_agents(actor.project_id)
    held = await claims.by_agent(hub, actor.project_id)
    views = [_view(r, actor.project_slug, online, held.get(r["id"]), True) for r in rows]
    if only_with_claims:
        views = [v for v in views if v["claims"] or v["workspace_id"] == always_include]
    # Stable sorts, last key first: claims, then online, then most
    # recently seen, then alias.
    views.sort(key=lambda v: v["alias"])
    views.sort(key=lambda v: v["last_seen"] or "", reverse=True)
    views.sort(key=lambda v: (not v["claims"], not v["online"]))
    picked = views[:limit]
    if always_include and all(v["workspace_id"] != always_include for v in picked):
        picked += [v for v in views if v["workspace_id"] == always_include]
    for view in picked:
        if not include_claims:
            view["claims"] = []
        if not include_presence:
            view["status"] = "unknown"
    return picked


async def _may_delete(hub: Hub, actor: Actor, workspace_id: str) -> None:
    if actor.is_human or workspace_id == actor.agent_id:
        return
    row = await hub.store.fetchrow(
        """
        SELECT t.id, t.joined_hostname, coalesce(t.http_online_until > now(), false) AS http_online,
               me.joined_hostname AS my_host
        FROM agents t JOIN agents me ON me.id = $3 AND me.project_id = t.project_id
        WHERE t.project_id = $1 AND t.id::text = $2 AND t.deleted_at IS NULL
        """,
        actor.project_id,
        workspace_id,
        actor.agent_id,
    )
    if row is None:
        raise not_found(f"workspace {workspace_id} not found")
    same_host = bool(row["my_host"]) and row["joined_hostname"] == row["my_host"]
    if not same_host:
        raise forbidden(
            "an agent deletes only its own workspace or offline ones of its own host; "
            "a human deletes the others",
            needs="human",
        )
    online = row["http_online"] or row["id"] in await hub.bus.online_agents(actor.project_id)
    if online:
        raise forbidden(f"workspace {workspace_id} is online: only a human may delete it")


async def delete(hub: Hub, actor: Actor, workspace_id: str) -> dict[str, Any]:
    """Soft-delete a workspace of the caller's project. Unknown ids, ids of
    another project and already deleted workspaces are all "not found".

    What the workspace held goes with it, so a workspace that is gone
    blocks nobody: its claims are released (``claim.released``, reason
    ``workspace_deleted``) in the same transaction, then its reservations
    (``reservation.released``).

    Who may: a human; the agent itself; and, for bdh's clean-up of gone
    worktrees, another agent of the project admitted from the same host
    (as both reported it when they joined, not as they say now) when the
    workspace is offline. The deleted agent's keys and tickets stop working
    and its open sessions close on every instance."""
    await _may_delete(hub, actor, workspace_id)
    async with events.change(hub, actor.project_id) as tx:
        row = await tx.conn.fetchrow(
            """
            UPDATE agents SET deleted_at = now(), http_online_until = NULL
            WHERE project_id = $1 AND id::text = $2 AND deleted_at IS NULL
            RETURNING id, alias, human_name, role, deleted_at
            """,
            actor.project_id,
            workspace_id,
        )
        if row is None:
            raise not_found(f"workspace {workspace_id} not found")
        agent_id = row["id"]
        held = await tx.conn.fetch(
            "SELECT bead_id FROM claims WHERE project_id = $1 AND agent_id = $2",
            actor.project_id,
            agent_id,
        )
        released = await beads.release_claims(
            tx.conn, actor.project_id, sorted(r["bead_id"] for r in held), agent_id
        )
        for claim in released:
            tx.emit(
                "claim.released",
                beads.claim_event(claim, reason="workspace_deleted", by=actor.alias),
            )
        result = {
            "workspace_id": agent_id,
            "agent_id": agent_id,
            "alias": row["alias"],
            "deleted_at": iso(row["deleted_at"]),
            "claims_released": [c["bead_id"] for c in released],
        }
        tx.emit("workspace.deleted", {**result, "by": actor.alias})
    await revocation.announce(hub, actor.project_id, agent_ids=[agent_id], reason="deleted")
    # Released as the holder itself, through the reservations service, so
    # the events and expiry timers are the usual ones.
    holder = Actor(
        project_id=actor.project_id,
        project_slug=actor.project_slug,
        agent_id=agent_id,
        alias=row["alias"],
        human_name=row["human_name"],
        role=row["role"],
    )
    mine = await reservations.list_active(hub, actor.project_id, holder_alias=row["alias"])
    if mine:
        await reservations.release(hub, holder, [r["path"] for r in mine])
    result["reservations_released"] = [r["path"] for r in mine]
    return result
