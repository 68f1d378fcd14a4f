"""The team at a glance: the caller, every agent and what each holds."""

from __future__ import annotations

from typing import Any

from hub.services import beads, claims, escalations, mail, presence, reservations
from hub.services.clock import iso, now
from hub.services.context import Actor, Hub


async def get(hub: Hub, actor: Actor) -> dict[str, Any]:
    """The caller's view of its team. The team part is the same for every
    agent of the project: concurrent callers share one reading of it (one
    that started after they asked; see Store.read_shared)."""
    team = await hub.store.read_shared(
        ("status", actor.project_id), lambda: _team(hub, actor.project_id)
    )
    agents = team["agents"]
    me = next((a for a in agents if a["agent_id"] == actor.agent_id), None)
    return {
        "project_id": actor.project_id,
        "project_slug": actor.project_slug,
        "workspace": me or {"alias": actor.alias, "human_name": actor.human_name},
        **team,
        "timestamp": iso(now()),
    }


async def _team(hub: Hub, project_id: str) -> dict[str, Any]:
    # Several reads, one pooled connection: see Store.pinned.
    async with hub.store.pinned():
        return await _read_team(hub, project_id)


async def _read_team(hub: Hub, project_id: str) -> dict[str, Any]:
    agents = await presence.list_agents(hub, project_id)
    held = await claims.by_agent(hub, project_id)
    locks = await reservations.list_active(hub, project_id)
    locked: dict[str, list[str]] = {}
    for lock in locks:
        locked.setdefault(lock["holder_agent_id"], []).append(lock["path"])
    for agent in agents:
        agent["current_locks"] = locked.get(agent["agent_id"], [])
        # Newest claim first: bdh shows it as the agent's current issue.
        agent["claims"] = held.get(agent["agent_id"], [])
        agent["current_issue"] = agent["claims"][0]["bead_id"] if agent["claims"] else None
    return {
        "agents": agents,
        "online_count": sum(1 for a in agents if a["online"]),
        "locks": locks,
        "escalations_pending": await escalations.pending_count(hub, project_id),
    }


async def command_context(hub: Hub, actor: Actor) -> dict[str, Any]:
    """What bdh prints around a bd command: the caller's unread mail and
    every claimed issue of the project, the caller's own included (bdh's
    CommandContext; its ``ready`` and ``:status`` pick the caller's out)."""
    agent_id = actor.require_agent()
    async with hub.store.pinned():
        return {
            "messages_waiting": await mail.unread_count(hub, actor.project_id, agent_id),
            "beads_in_progress": await beads.in_progress(hub, actor.project_id),
        }
