"""The team at a glance: the caller, every agent and what each holds."""

from __future__ import annotations

from typing import Any

from hub.services import beads, claims, escalations, mail, presence, reservations
from hub.services.clock import iso, now
from hub.services.context import Actor, Hub


async def get(hub: Hub, actor: Actor) -> dict[str, Any]:
    # Six reads, one pooled connection: see Store.pinned.
    async with hub.store.pinned():
        return await _get(hub, actor)


async def _get(hub: Hub, actor: Actor) -> dict[str, Any]:
    agents = await presence.list_agents(hub, actor.project_id)
    held = await claims.by_agent(hub, actor.project_id)
    locks = await reservations.list_active(hub, actor.project_id)
    locked: dict[str, list[str]] = {}
    for lock in locks:
        locked.setdefault(lock["holder_agent_id"], []).append(lock["path"])
    for agent in agents:
        agent["current_locks"] = locked.get(agent["agent_id"], [])
        # Newest claim first: bdh shows it as the agent's current issue.
        agent["claims"] = held.get(agent["agent_id"], [])
        agent["current_issue"] = agent["claims"][0]["bead_id"] if agent["claims"] else None
    me = next((a for a in agents if a["agent_id"] == actor.agent_id), None)
    return {
        "project_id": actor.project_id,
        "project_slug": actor.project_slug,
        "workspace": me or {"alias": actor.alias, "human_name": actor.human_name},
        "agents": agents,
        "online_count": sum(1 for a in agents if a["online"]),
        "locks": locks,
        "escalations_pending": await escalations.pending_count(hub, actor.project_id),
        "timestamp": iso(now()),
    }


async def command_context(hub: Hub, actor: Actor) -> dict[str, Any]:
    """What bdh prints around a bd command: the caller's unread mail and
    the issues other agents are working on (bdh's CommandContext)."""
    agent_id = actor.require_agent()
    async with hub.store.pinned():
        return {
            "messages_waiting": await mail.unread_count(hub, actor.project_id, agent_id),
            "beads_in_progress": [
                b
                for b in await beads.in_progress(hub, actor.project_id)
                if b["workspace_id"] != agent_id
            ],
        }
