"""Who is online, and what each agent is doing.

An agent is online while it holds at least one WebSocket session on any
instance (counted on the bus), or, for HTTP-only clients, until its last
heartbeat's TTL runs out (``agents.http_online_until``). The instance that
sees an agent's first session open, or its last one close, records one
``presence`` event; a dead instance's agents are reported by the instance
that reaps it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hub import metrics
from hub.bus import SessionLimit
from hub.services import background, events, leases, limits
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from protocol.errors import forbidden, not_found

logger = logging.getLogger("beadhub.presence")

_AGENT_COLUMNS = """
    a.id AS agent_id, a.alias, a.human_name, a.role, a.agent_type, a.program, a.model,
    a.repo, a.branch, a.focus, a.focus_updated_at, a.hostname, a.workspace_path,
    a.last_seen, a.created_at, (a.http_online_until > now()) AS http_online, a.granted_role
"""

#: Fields an agent may set about itself through presence.update.
UPDATABLE = ("repo", "branch", "program", "model", "role", "focus", "hostname", "workspace_path")


def agent_view(row: Any, online: bool) -> dict[str, Any]:
    return {
        "agent_id": row["agent_id"],
        "workspace_id": row["agent_id"],
        "alias": row["alias"],
        "human_name": row["human_name"],
        "role": row["role"],
        # What a human granted (``coordinator``); ``role`` is only declared.
        "granted_role": row["granted_role"],
        "agent_type": row["agent_type"],
        "program": row["program"],
        "model": row["model"],
        "repo": row["repo"],
        "branch": row["branch"],
        "focus": row["focus"],
        "focus_updated_at": iso(row["focus_updated_at"]),
        "hostname": row["hostname"],
        "workspace_path": row["workspace_path"],
        "online": online,
        "status": "online" if online else "offline",
        "last_seen": iso(row["last_seen"]),
    }


async def list_agents(
    hub: Hub, project_id: str, *, online_only: bool = False
) -> list[dict[str, Any]]:
    online = await hub.bus.online_agents(project_id)
    rows = await hub.store.fetch(
        f"SELECT {_AGENT_COLUMNS} FROM agents a "
        # Humans' inbox rows (hub.services.humans) are not team members.
        "WHERE a.project_id = $1 AND a.deleted_at IS NULL AND a.alias NOT LIKE 'human:%' "
        "ORDER BY a.alias",
        project_id,
    )
    agents = [agent_view(r, r["agent_id"] in online or bool(r["http_online"])) for r in rows]
    return [a for a in agents if a["online"]] if online_only else agents


async def get_agent(hub: Hub, project_id: str, agent_id: str) -> dict[str, Any] | None:
    row = await hub.store.fetchrow(
        f"SELECT {_AGENT_COLUMNS} FROM agents a WHERE a.project_id = $1 AND a.id = $2",
        project_id,
        agent_id,
    )
    if row is None:
        return None
    online = agent_id in await hub.bus.online_agents(project_id) or bool(row["http_online"])
    return agent_view(row, online)


async def _announce(hub: Hub, project_id: str, agent_id: str, online: bool) -> None:
    async with events.change(hub, project_id) as tx:
        row = await tx.conn.fetchrow(
            f"UPDATE agents a SET last_seen = now() WHERE a.id = $1 AND a.project_id = $2 "
            f"RETURNING {_AGENT_COLUMNS}",
            agent_id,
            project_id,
        )
        if row is not None:
            tx.emit("presence", agent_view(row, online or bool(row["http_online"])))
    if not online:
        leases.agent_left(hub, project_id, agent_id)


async def session_opened(hub: Hub, actor: Actor, session_id: str) -> None:
    """Count the session; RATE_LIMITED when its agent already holds
    ``max_sessions_per_agent`` (on every instance together)."""
    agent_id = actor.require_agent()
    cap = hub.settings.max_sessions_per_agent
    try:
        first = await hub.bus.presence_join(actor.project_id, agent_id, session_id, cap)
    except SessionLimit:
        metrics.rate_limited("sessions_per_agent")
        raise limits.rate_limited(
            5, f"{actor.alias} already holds {cap} sessions; close one first"
        ) from None
    if first:
        await _announce(hub, actor.project_id, agent_id, online=True)


async def session_closed(hub: Hub, actor: Actor, session_id: str) -> None:
    agent_id = actor.require_agent()
    if await hub.bus.presence_leave(actor.project_id, agent_id, session_id):
        await _announce(hub, actor.project_id, agent_id, online=False)


async def instance_lost(hub: Hub, project_id: str, agent_ids: list[str]) -> None:
    """Bus callback: these agents' sessions lived on an instance that died."""
    for agent_id in agent_ids:
        await _announce(hub, project_id, agent_id, online=False)


async def update(hub: Hub, actor: Actor, fields: dict[str, Any]) -> dict[str, Any]:
    agent_id = actor.require_agent()
    values = {k: v for k, v in fields.items() if k in UPDATABLE and v is not None}
    if not values:
        agent = await get_agent(hub, actor.project_id, agent_id)
        assert agent is not None
        return agent
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, start=3))
    if "focus" in values:
        assignments += ", focus_updated_at = now()"
    online = agent_id in await hub.bus.online_agents(actor.project_id)
    async with events.change(hub, actor.project_id) as tx:
        row = await tx.conn.fetchrow(
            f"UPDATE agents a SET {assignments}, last_seen = now() "
            f"WHERE a.id = $1 AND a.project_id = $2 RETURNING {_AGENT_COLUMNS}",
            agent_id,
            actor.project_id,
            *values.values(),
        )
        assert row is not None
        agent = agent_view(row, online or bool(row["http_online"]))
        tx.emit("presence", agent)
    return agent


async def heartbeat(
    hub: Hub, actor: Actor, ttl_seconds: int | None = None, fields: dict[str, Any] | None = None
) -> dict[str, Any]:
    """HTTP-only presence: online for ``ttl_seconds`` from now. Announces
    a presence event only when the agent was offline before."""
    agent_id = actor.require_agent()
    ttl = ttl_seconds or hub.settings.presence_ttl_seconds
    values = {k: v for k, v in (fields or {}).items() if k in UPDATABLE and v}
    assignments = "".join(f", {name} = ${i}" for i, name in enumerate(values, start=4))
    online_ws = agent_id in await hub.bus.online_agents(actor.project_id)
    async with events.change(hub, actor.project_id) as tx:
        was_online = await tx.conn.fetchval(
            "SELECT http_online_until > now() FROM agents WHERE id = $1 FOR UPDATE", agent_id
        )
        row = await tx.conn.fetchrow(
            f"UPDATE agents a SET last_seen = now(), "
            f"http_online_until = now() + make_interval(secs => $3){assignments} "
            f"WHERE a.id = $1 AND a.project_id = $2 RETURNING {_AGENT_COLUMNS}",
            agent_id,
            actor.project_id,
            float(ttl),
            *values.values(),
        )
        assert row is not None
        agent = agent_view(row, True)
        if not (was_online or online_ws) or values:
            tx.emit("presence", agent)
    _watch_lapse(hub, actor.project_id, agent_id, float(ttl))
    return {"agent": agent, "ttl_seconds": ttl, "last_seen": agent["last_seen"]}


#: One timer per HTTP-only agent on the instance that saw its last
#: heartbeat; a newer heartbeat replaces it.
_lapse_timers: dict[tuple[int, str], asyncio.TimerHandle] = {}


def _watch_lapse(hub: Hub, project_id: str, agent_id: str, ttl: float) -> None:
    """Announce the agent offline when its heartbeat TTL runs out, unless
    it heartbeats again or holds a WebSocket session by then. (If this
    instance dies first, nothing is announced; listings are still right.)"""
    key = (id(hub), agent_id)
    previous = _lapse_timers.pop(key, None)
    if previous is not None:
        previous.cancel()

    def fire() -> None:
        _lapse_timers.pop(key, None)
        background.spawn(_announce_lapse_safely(hub, project_id, agent_id), _lapse_tasks)

    # A little past the TTL, so the row's own clock has certainly passed it.
    _lapse_timers[key] = background.later(ttl + 0.5, fire)


_lapse_tasks: set[asyncio.Task[None]] = set()


async def _announce_lapse_safely(hub: Hub, project_id: str, agent_id: str) -> None:
    try:
        await _announce_lapse(hub, project_id, agent_id)
    except Exception as exc:  # the hub may be shutting down, or the database away
        logger.warning("could not announce that agent %s went offline: %s", agent_id, exc)


async def _announce_lapse(hub: Hub, project_id: str, agent_id: str) -> None:
    async with events.change(hub, project_id) as tx:
        # Clearing the lapsed deadline makes the announcement happen once,
        # even if several instances' timers fire for the same agent.
        row = await tx.conn.fetchrow(
            f"UPDATE agents a SET http_online_until = NULL "
            f"WHERE a.id = $1 AND a.project_id = $2 AND a.http_online_until <= now() "
            f"RETURNING {_AGENT_COLUMNS}",
            agent_id,
            project_id,
        )
        # An agent that has since opened a WebSocket session is still online.
        if row is not None and agent_id not in await hub.bus.online_agents(project_id):
            tx.emit("presence", agent_view(row, False))
            gone = True
        else:
            gone = False
    if gone:
        leases.agent_left(hub, project_id, agent_id)


async def require_self(hub: Hub, actor: Actor, workspace_id: str | None) -> str | None:
    """bdh names its own workspace in many bodies; a key may act only as
    its own agent. Another agent of the project is forbidden; an id the
    project does not have (another project's included) is not found. A
    human (no agent) names no workspace."""
    agent_id = actor.agent_id
    if agent_id is None:
        if workspace_id:
            raise forbidden("a human acts for no workspace; leave workspace_id out")
        return None
    if not workspace_id or workspace_id == agent_id:
        return agent_id
    exists = await hub.store.fetchval(
        "SELECT true FROM agents WHERE project_id = $1 AND id::text = $2",
        actor.project_id,
        workspace_id,
    )
    if exists:
        raise forbidden(
            f"this api key acts for workspace {agent_id} ({actor.alias}), not {workspace_id}"
        )
    raise not_found(f"workspace {workspace_id} not found")


async def alias_of(hub: Hub, project_id: str, agent_id: str) -> str | None:
    """The alias of an agent (bdh names agents by workspace id), or None
    when the project has no such agent; any text is a safe argument."""
    alias: str | None = await hub.store.fetchval(
        "SELECT alias FROM agents WHERE project_id = $1 AND id::text = $2",
        project_id,
        agent_id,
    )
    return alias
