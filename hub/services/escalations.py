"""Escalations: an agent that cannot resolve something asks a human.

An escalation is pending until a human (a dashboard ticket) or the project's
coordinator answers it, or until it expires. The status is derived from
``responded_at`` and ``expires_at`` when read, so nothing sweeps expired
rows. Answering is one conditional UPDATE: of two concurrent answers exactly
one wins, and an expired escalation can no longer be answered.

Both ``escalation.created`` and ``escalation.answered`` go to the whole
project, so every dashboard sees the queue change; the escalating agent
finds its answer in ``escalation.answered`` (or with :func:`get`).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from hub.services import policies
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from hub.services.events import change
from protocol.errors import conflict, invalid_params, not_found
from protocol.methods.escalations import (
    BEAD_ID_MAX,
    DEFAULT_EXPIRES_IN_SECONDS,
    MAX_EXPIRES_IN_SECONDS,
    RESPONSE_MAX,
    SITUATION_MAX,
    SUBJECT_MAX,
)

STATUSES = ("pending", "answered", "expired")

_STATUS_SQL = """
CASE WHEN e.responded_at IS NOT NULL THEN 'answered'
     WHEN e.expires_at <= now() THEN 'expired'
     ELSE 'pending' END
"""

_COLUMNS = f"""
e.id, e.project_id, e.agent_id, e.alias, e.subject, e.situation, e.bead_id,
e.created_at, e.expires_at, e.response, e.responded_by, e.responded_at,
{_STATUS_SQL} AS status
"""


def view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "escalation_id": row["id"],
        "project_id": row["project_id"],
        "agent_id": row["agent_id"],
        "workspace_id": row["agent_id"],
        "alias": row["alias"],
        "subject": row["subject"],
        "situation": row["situation"],
        "bead_id": row["bead_id"],
        "status": row["status"],
        "created_at": iso(row["created_at"]),
        "expires_at": iso(row["expires_at"]),
        "response": row["response"],
        "responded_by": row["responded_by"],
        "responded_at": iso(row["responded_at"]),
    }


def _text(name: str, value: str, limit: int) -> str:
    """The services are also called by the HTTP shim and the dashboard, so
    they check what the JSON-RPC params models already check."""
    if not isinstance(value, str) or not value.strip():
        raise invalid_params(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise invalid_params(f"{name} is {len(value)} characters; the limit is {limit}")
    return value


def _escalation_id(value: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise not_found(f"escalation {value!r} not found") from None


async def create(
    hub: Hub,
    actor: Actor,
    subject: str,
    situation: str,
    bead_id: str | None = None,
    expires_in_seconds: int | None = None,
) -> dict[str, Any]:
    """Open an escalation for the calling agent; announce
    ``escalation.created`` to the project."""
    agent_id = actor.require_agent()
    subject = _text("subject", subject, SUBJECT_MAX).strip()
    situation = _text("situation", situation, SITUATION_MAX)
    if bead_id is not None:
        bead_id = _text("bead_id", bead_id, BEAD_ID_MAX).strip()
    ttl = DEFAULT_EXPIRES_IN_SECONDS if expires_in_seconds is None else expires_in_seconds
    if not 1 <= ttl <= MAX_EXPIRES_IN_SECONDS:
        raise invalid_params(
            f"expires_in_seconds must be between 1 and {MAX_EXPIRES_IN_SECONDS}",
            expires_in_seconds=ttl,
        )
    async with change(hub, actor.project_id) as tx:
        row = await tx.conn.fetchrow(
            f"""
            INSERT INTO escalations AS e
                (project_id, agent_id, alias, subject, situation, bead_id, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
            RETURNING {_COLUMNS}
            """,
            actor.project_id,
            agent_id,
            actor.alias,
            subject,
            situation,
            bead_id,
            float(ttl),
        )
        escalation = view(row)
        tx.emit("escalation.created", _event_data(escalation))
    return escalation


def _event_data(escalation: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "escalation_id",
        "agent_id",
        "alias",
        "subject",
        "situation",
        "bead_id",
        "status",
        "created_at",
        "expires_at",
        "response",
        "responded_by",
        "responded_at",
    )
    return {k: escalation[k] for k in keys}


async def list_(
    hub: Hub,
    actor: Actor,
    status: str | None = None,
    mine: bool = False,
    limit: int = 100,
) -> dict[str, Any]:
    """The project's escalations, newest first; ``pending_count`` counts
    every pending one whatever the filter."""
    if status is not None and status not in STATUSES:
        raise invalid_params(f"status must be one of {', '.join(STATUSES)}", status=status)
    agent_id = actor.require_agent() if mine else None
    rows = await hub.store.fetch(
        f"""
        SELECT {_COLUMNS} FROM escalations e
        WHERE e.project_id = $1
          AND ($2::uuid IS NULL OR e.agent_id = $2)
          AND ($3::text IS NULL OR {_STATUS_SQL} = $3)
        ORDER BY e.created_at DESC, e.id
        LIMIT $4
        """,
        actor.project_id,
        agent_id,
        status,
        max(1, min(limit, 500)),
    )
    return {
        "escalations": [view(r) for r in rows],
        "count": len(rows),
        "pending_count": await pending_count(hub, actor.project_id),
    }


async def get(hub: Hub, actor: Actor, escalation_id: str) -> dict[str, Any]:
    row = await hub.store.fetchrow(
        f"SELECT {_COLUMNS} FROM escalations e WHERE e.id = $1 AND e.project_id = $2",
        _escalation_id(escalation_id),
        actor.project_id,
    )
    if row is None:
        raise not_found(f"escalation {escalation_id} not found", escalation_id=escalation_id)
    return view(row)


async def respond(hub: Hub, actor: Actor, escalation_id: str, response: str) -> dict[str, Any]:
    """Answer a pending escalation (humans and coordinators only); announce
    ``escalation.answered`` to the project. Answering twice, or after the
    escalation expired, is a CONFLICT."""
    escalation_id = _escalation_id(escalation_id)
    response = _text("response", response, RESPONSE_MAX)
    responded_by = (actor.human_name or actor.alias) if actor.is_human else actor.alias
    async with change(hub, actor.project_id) as tx:
        await policies.require_coordinator_or_human(tx.conn, actor, "answer escalations")
        row = await tx.conn.fetchrow(
            f"""
            UPDATE escalations AS e
            SET response = $3, responded_by = $4, responded_by_agent_id = $5,
                responded_at = now()
            WHERE e.id = $1 AND e.project_id = $2
              AND e.responded_at IS NULL AND e.expires_at > now()
            RETURNING {_COLUMNS}
            """,
            escalation_id,
            actor.project_id,
            response,
            responded_by,
            actor.agent_id,
        )
        if row is None:
            raise await _why_not_answerable(tx.conn, actor.project_id, escalation_id)
        escalation = view(row)
        tx.emit("escalation.answered", _event_data(escalation))
    return escalation


async def _why_not_answerable(
    conn: asyncpg.Connection, project_id: str, escalation_id: str
) -> Exception:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM escalations e WHERE e.id = $1 AND e.project_id = $2",
        escalation_id,
        project_id,
    )
    if row is None:
        return not_found(f"escalation {escalation_id} not found", escalation_id=escalation_id)
    if row["status"] == "answered":
        return conflict(
            f"escalation {escalation_id} was already answered by {row['responded_by']}",
            escalation_id=escalation_id,
            status="answered",
            responded_by=row["responded_by"],
            responded_at=iso(row["responded_at"]),
        )
    return conflict(
        f"escalation {escalation_id} expired at {iso(row['expires_at'])}",
        escalation_id=escalation_id,
        status="expired",
        expires_at=iso(row["expires_at"]),
    )


async def pending_count(hub: Hub, project_id: str) -> int:
    """Escalations still waiting for an answer (for status and dashboards)."""
    value = await hub.store.fetchval(
        "SELECT count(*) FROM escalations "
        "WHERE project_id = $1 AND responded_at IS NULL AND expires_at > now()",
        project_id,
    )
    return int(value)
