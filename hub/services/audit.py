"""The audit trail: every action a human takes, on every transport.

Rows are written by the dispatchers (hub.transport.rpc and the HTTP route
registry) for every call a human makes that is not a read, with its
outcome, and by the services for what happens outside them (signing in,
admitting an agent from the CLI). The trail outlives a deleted project.
"""

from __future__ import annotations

from typing import Any

from hub.services import events
from hub.services.clock import iso
from hub.services.context import Actor, Hub

#: Methods and routes that only read: not audited.
READ_SUFFIXES = (
    ".list",
    ".get",
    ".recent",
    ".history",
    ".pending",
    ".sessions",
    ".inbox",
    ".thread",
    ".versions",
    ".ready",
    ".whoami",
    ".ping",
    ".since",
    ".subscribe",
    ".requests",
)

#: Fields never copied into the trail.
_SECRET_FIELDS = {"api_key", "ticket", "token", "invitation", "body", "situation", "response"}


#: Reads whose names the suffixes miss. The dashboard makes them on every
#: refresh: audited, they buried the human's actions in the trail.
READS = frozenset(
    {
        "chat.all",
        "chat.wait",
        "escalations.wait",
        "mail.receipts",
        "reservations.check",
        "search.query",
        "team.stale",
        "team.waiting",
        "POST /v1/reservations/check",
        "POST /v1/search",
        "POST /v1/news",
    }
)


def is_read(action: str) -> bool:
    return action in READS or action.endswith(READ_SUFFIXES) or action.startswith("GET ")


def summary(params: dict[str, Any]) -> dict[str, Any]:
    """What the trail keeps of a call's parameters: ids and short values,
    never a secret or a message body."""
    kept: dict[str, Any] = {}
    for name, value in params.items():
        if name in _SECRET_FIELDS:
            continue
        if isinstance(value, str):
            kept[name] = value[:200]
        elif isinstance(value, (int, float, bool)) or value is None:
            kept[name] = value
        elif isinstance(value, list) and len(value) <= 50:
            kept[name] = [v[:200] if isinstance(v, str) else v for v in value][:50]
    return kept


_ANNOUNCE = events.insert_cte(
    "SELECT e.project_id, 'audit.recorded', '{}'::uuid[], jsonb_build_object("
    f"'id', e.id, 'at', {events.iso_sql('e.at')}, 'actor', e.actor, "
    "'credential', e.credential, 'action', e.action, 'target', e.target, "
    "'outcome', e.outcome, 'detail', e.detail) "
    "FROM entry e JOIN projects p ON p.id = e.project_id"
)

#: One statement: the entry, and ``audit.recorded`` announcing it to the
#: project's humans (none once the project is gone: deleting a project is
#: audited after the fact).
_RECORD = f"""
WITH entry AS (
    INSERT INTO audit_log (project_id, project_slug, actor, credential, action, target,
                           outcome, detail)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    RETURNING id, project_id, at, actor, credential, action, target, outcome, detail
), ev AS (
{_ANNOUNCE}
)
SELECT {events.returned()} FROM entry LEFT JOIN ev ON true
"""


async def record(
    hub: Hub,
    actor: Actor | None,
    action: str,
    *,
    target: str = "",
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
    who: str = "",
    project_id: str | None = None,
    project_slug: str = "",
) -> None:
    """Write one entry; every human's dashboard is told (``audit.recorded``)."""
    row = await hub.store.fetchrow(
        _RECORD,
        actor.project_id if actor else project_id,
        actor.project_slug if actor else project_slug,
        (actor.alias if actor else who) or "human",
        actor.credential.partition(":")[0] if actor else "operator",
        action,
        target[:200],
        outcome,
        detail or {},
    )
    assert row is not None
    await events.publish_rows(hub, [row])


async def list_(
    hub: Hub, actor: Actor, limit: int = 100, before: int | None = None
) -> dict[str, Any]:
    """The project's trail, newest first. Humans only."""
    actor.require_human("read the audit trail")
    rows = await hub.store.fetch(
        """
        SELECT id, at, actor, credential, action, target, outcome, detail
        FROM audit_log
        WHERE project_id = $1 AND ($2::bigint IS NULL OR id < $2)
        ORDER BY id DESC LIMIT $3
        """,
        actor.project_id,
        before,
        limit,
    )
    entries = [
        {
            "id": r["id"],
            "at": iso(r["at"]),
            "actor": r["actor"],
            "credential": r["credential"],
            "action": r["action"],
            "target": r["target"],
            "outcome": r["outcome"],
            "detail": r["detail"],
        }
        for r in rows
    ]
    return {"entries": entries, "count": len(entries)}


def outcome_of(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return str(getattr(code, "name", code)).lower()
