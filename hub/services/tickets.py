"""Browser tickets: what the dashboard holds instead of a long-lived secret.

Two kinds. A human's ticket comes only from a human credential
(hub.services.signin: the operator token, a one-time sign-in link): it acts
as that project's human. An agent's ticket comes from its api key
(``bdh :dashboard``) and acts as that agent, with exactly its powers; it
never becomes a human credential. Tickets expire (default 8 hours), die
with their agent, and signing out ends them on every instance, open
sessions included.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from hub.services import auth, revocation
from hub.services.clock import iso
from hub.services.context import Hub

DEFAULT_TTL_SECONDS = 8 * 3600


async def _insert(
    conn: asyncpg.Connection | Any,
    project_id: str,
    agent_id: str | None,
    human_name: str,
    ttl_seconds: int,
) -> tuple[str, Any]:
    ticket = auth.new_secret(auth.TICKET_PREFIX)
    expires_at = await conn.fetchval(
        """
        INSERT INTO browser_tickets (ticket_hash, project_id, agent_id, human_name, expires_at,
                                     kind)
        VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6)
        RETURNING expires_at
        """,
        auth.digest(ticket),
        project_id,
        agent_id,
        human_name,
        float(ttl_seconds),
        "human" if agent_id is None else "agent",
    )
    return ticket, expires_at


async def issue_for_agent(
    hub: Hub, api_key: str, ttl_seconds: int = DEFAULT_TTL_SECONDS
) -> dict[str, Any]:
    """``bdh :dashboard``: the agent's own view, as that agent."""
    actor = await auth.authenticate(hub, api_key)
    if actor.via_ticket or actor.agent_id is None:
        raise auth.unauthorized("send an agent's api key")
    ticket, expires_at = await _insert(
        hub.store, actor.project_id, actor.agent_id, actor.human_name, ttl_seconds
    )
    return {
        "ticket": ticket,
        "expires_at": iso(expires_at),
        "project_id": actor.project_id,
        "project_slug": actor.project_slug,
        "human_name": actor.human_name,
        "alias": actor.alias,
        "kind": "agent",
    }


async def issue_for_human(
    conn: asyncpg.Connection,
    project: dict[str, Any],
    human_name: str,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
) -> dict[str, Any]:
    ticket, expires_at = await _insert(conn, project["id"], None, human_name, ttl_seconds)
    return {
        "ticket": ticket,
        "expires_at": iso(expires_at),
        "project_id": project["id"],
        "project_slug": project["slug"],
        "human_name": human_name,
        "alias": f"human:{human_name}",
        "kind": "human",
    }


async def revoke(hub: Hub, ticket: str) -> dict[str, Any]:
    """Sign-out: the ticket stops working at once, on every instance, and
    its open sessions close. Knowing the ticket is the proof; revoking an
    unknown one is a no-op."""
    row = await hub.store.fetchrow(
        "DELETE FROM browser_tickets WHERE ticket_hash = $1 RETURNING id, project_id",
        auth.digest(ticket),
    )
    if row is None:
        return {"revoked": False}
    await revocation.announce(
        hub, row["project_id"], credentials=[f"ticket:{row['id']}"], reason="signed out"
    )
    return {"revoked": True}
