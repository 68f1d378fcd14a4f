"""Browser tickets for the dashboard.

A human signs in with a project api key once; the hub answers with a ticket
that expires (default 8 hours) and acts as that project's human: it sees the
whole project feed and can answer escalations, post mail and revoke
reservations, but holds no agent session and never counts as online.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from hub.services import auth
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from protocol.errors import unauthorized

TICKET_PREFIX = "bht_"
DEFAULT_TTL_SECONDS = 8 * 3600


def _digest(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode()).digest()


async def issue(hub: Hub, api_key: str, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> dict[str, Any]:
    actor = await auth.authenticate(hub, api_key)
    ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
    human = actor.human_name or actor.alias or "human"
    expires_at = await hub.store.fetchval(
        """
        INSERT INTO browser_tickets (ticket_hash, project_id, agent_id, human_name, expires_at)
        VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
        RETURNING expires_at
        """,
        _digest(ticket),
        actor.project_id,
        actor.agent_id,
        human,
        float(ttl_seconds),
    )
    return {
        "ticket": ticket,
        "expires_at": iso(expires_at),
        "project_id": actor.project_id,
        "project_slug": actor.project_slug,
        "human_name": human,
    }


async def revoke(hub: Hub, ticket: str) -> dict[str, Any]:
    """Sign-out: the ticket stops working at once, on every instance.
    Knowing the ticket is the proof; revoking an unknown one is a no-op."""
    status = await hub.store.execute(
        "DELETE FROM browser_tickets WHERE ticket_hash = $1", _digest(ticket)
    )
    return {"revoked": status == "DELETE 1"}


async def redeem(hub: Hub, ticket: str) -> Actor:
    row = await hub.store.fetchrow(
        """
        SELECT t.project_id, p.slug, t.human_name
        FROM browser_tickets t JOIN projects p ON p.id = t.project_id
        WHERE t.ticket_hash = $1 AND t.expires_at > now()
        """,
        _digest(ticket),
    )
    if row is None:
        raise unauthorized("invalid or expired ticket: sign in again")
    return Actor(
        project_id=row["project_id"],
        project_slug=row["slug"],
        agent_id=None,
        alias=f"human:{row['human_name']}",
        human_name=row["human_name"],
        role="human",
    )
