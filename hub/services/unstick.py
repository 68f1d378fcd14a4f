"""Unsticking the team: what a human sees and does when work is held by an
agent that is gone.

A claim or reservation is *stale* when its holder is offline (no open
session, no live HTTP heartbeat): the holder cannot be working on it. The
human releases or reassigns the claim (``claims.release``,
:func:`reassign`) or revokes the reservation (``reservations.revoke``);
each change is announced to the agents as the usual events.
"""

from __future__ import annotations

from typing import Any

from hub.services import beads, humans, presence
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from hub.services.events import change
from protocol.errors import invalid_params, not_found

_TARGET = """
SELECT id, alias, human_name FROM agents
WHERE project_id = $1 AND alias = $2 AND deleted_at IS NULL AND alias NOT LIKE 'human:%'
"""

_TAKE = """
INSERT INTO claims (project_id, bead_id, agent_id) VALUES ($1, $2, $3)
RETURNING claimed_at
"""


async def reassign(hub: Hub, actor: Actor, bead_id: str, to_alias: str) -> dict[str, Any]:
    """Move a claim to another agent (humans only): ``claim.released``
    (reason ``reassigned``) for the old holder, then ``claim.acquired`` for
    the new one, in one transaction."""
    humans.require_human(actor, "reassign a claim")
    bead_id = beads.check_bead_id(bead_id)
    async with change(hub, actor.project_id) as tx:
        target = await tx.conn.fetchrow(_TARGET, actor.project_id, to_alias)
        if target is None:
            raise not_found(f"no agent {to_alias!r} in this project", alias=to_alias)
        released = await beads.release_claims(tx.conn, actor.project_id, [bead_id])
        if not released:
            raise not_found(f"nobody holds {bead_id}: nothing to reassign", bead_id=bead_id)
        old = released[0]
        if old["agent_id"] == target["id"]:
            raise invalid_params(f"{to_alias} already holds {bead_id}", bead_id=bead_id)
        claimed_at = await tx.conn.fetchval(_TAKE, actor.project_id, bead_id, target["id"])
        by = actor.alias
        tx.emit(
            "claim.released",
            beads.claim_event(old, reason="reassigned", by=by, to_alias=to_alias),
        )
        acquired = {
            "bead_id": bead_id,
            "title": old["title"] or "",
            "agent_id": target["id"],
            "workspace_id": target["id"],
            "alias": target["alias"],
            "human_name": target["human_name"],
            "claimed_at": iso(claimed_at),
            "by": by,
            "from_alias": old["alias"],
        }
        tx.emit("claim.acquired", acquired)
    return {"bead_id": bead_id, "from_alias": old["alias"], "claim": acquired}


async def stale(hub: Hub, actor: Actor) -> dict[str, Any]:
    """Claims and reservations whose holder is offline, oldest first, with
    when the holder was last seen."""
    humans.require_human(actor, "see stale claims and reservations")
    agents = {a["agent_id"]: a for a in await presence.list_agents(hub, actor.project_id)}
    offline = {i for i, a in agents.items() if not a["online"]}
    # claims.list marks a claim stale once its holder is gone (leases); the
    # holder's presence decides where a row has no mark.
    claims = [
        c
        for c in await beads.claim_rows(hub, actor.project_id)
        if c.get("stale", c["agent_id"] in offline)
    ]
    rows = await hub.store.fetch(
        "SELECT id, path, holder_alias, holder_agent_id AS agent_id, acquired_at, expires_at "
        "FROM reservations "
        "WHERE project_id = $1 AND expires_at > now() ORDER BY acquired_at",
        actor.project_id,
    )
    locks = [
        {
            "reservation_id": r["id"],
            "path": r["path"],
            "holder_alias": r["holder_alias"],
            "holder_agent_id": r["agent_id"],
            "acquired_at": iso(r["acquired_at"]),
            "expires_at": iso(r["expires_at"]),
            "last_seen": agents[r["agent_id"]]["last_seen"],
        }
        for r in rows
        if r["agent_id"] in offline
    ]
    for claim in claims:
        claim["last_seen"] = claim.get("holder_last_seen") or agents[claim["agent_id"]]["last_seen"]
    claims.sort(key=lambda c: c["claimed_at"] or "")
    return {"claims": claims, "reservations": locks}
