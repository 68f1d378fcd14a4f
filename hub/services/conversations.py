"""What the team lead sees of the project's conversations: every chat, and
everyone who is blocked waiting on someone (the dashboard's message centre
and its "Waiting on" view). Humans only: agents see their own chats through
hub.services.chat."""

from __future__ import annotations

from typing import Any

from hub.services import humans, queues
from hub.services.clock import iso
from hub.services.context import Actor, Hub

_ALL = """
SELECT s.id AS session_id, s.created_at,
       (SELECT array_agg(a.alias ORDER BY a.alias)
        FROM chat_participants o JOIN agents a ON a.id = o.agent_id
        WHERE o.session_id = s.id) AS participants,
       last.body AS last_message, last.from_alias AS last_from,
       last.created_at AS last_activity,
       (SELECT count(*) FROM chat_messages m WHERE m.session_id = s.id) AS message_count
FROM chat_sessions s
LEFT JOIN LATERAL (
    SELECT body, from_alias, created_at FROM chat_messages m
    WHERE m.session_id = s.id ORDER BY m.seq DESC LIMIT 1
) last ON true
WHERE s.project_id = $1
ORDER BY last.created_at DESC NULLS LAST, s.created_at DESC
LIMIT $2
"""

# A participant in send-and-wait waits on the session's other participants;
# it has waited since its last message there (the one it waits after).
_CHAT_WAITS = """
SELECT o.session_id, a.id AS agent_id, a.alias, o.waiting_until,
       (SELECT max(m.created_at) FROM chat_messages m
        WHERE m.session_id = o.session_id AND m.from_agent_id = o.agent_id) AS since,
       (SELECT array_agg(b.alias ORDER BY b.alias)
        FROM chat_participants p JOIN agents b ON b.id = p.agent_id
        WHERE p.session_id = o.session_id AND p.agent_id <> o.agent_id) AS waiting_on
FROM chat_participants o JOIN agents a ON a.id = o.agent_id
WHERE o.project_id = $1 AND o.waiting_until > now()
"""

_ESCALATION_WAITS = """
SELECT id, agent_id, alias, subject, created_at, expires_at FROM escalations
WHERE project_id = $1 AND responded_at IS NULL AND expires_at > now()
"""


async def all_sessions(hub: Hub, actor: Actor, limit: int = 200) -> dict[str, Any]:
    """Every conversation of the project, most recently active first."""
    humans.require_human(actor, "list every conversation")
    rows = await hub.store.fetch(_ALL, actor.project_id, limit)
    return {
        "sessions": [
            {
                "session_id": r["session_id"],
                "participants": list(r["participants"] or []),
                "created_at": iso(r["created_at"]),
                "last_message": r["last_message"] or "",
                "last_from": r["last_from"] or "",
                "last_activity": iso(r["last_activity"]),
                "message_count": int(r["message_count"]),
            }
            for r in rows
        ]
    }


async def waiting(hub: Hub, actor: Actor) -> dict[str, Any]:
    """Everyone blocked on someone else, oldest first: agents waiting for a
    chat reply, in line for a file or an issue (hub.services.queues), or
    waiting for a human's answer to an escalation."""
    humans.require_human(actor, "see who is waiting")
    async with hub.store.pinned():
        chats = await hub.store.fetch(_CHAT_WAITS, actor.project_id)
        asks = await hub.store.fetch(_ESCALATION_WAITS, actor.project_id)
        lines = await queues.waiting(hub, actor.project_id)
    items: list[dict[str, Any]] = [
        {
            "kind": "chat",
            "agent_id": r["agent_id"],
            "alias": r["alias"],
            "waiting_on": list(r["waiting_on"] or []),
            "since": iso(r["since"]),
            "until": iso(r["waiting_until"]),
            "session_id": r["session_id"],
        }
        for r in chats
    ]
    items += [
        {
            "kind": "escalation",
            "agent_id": r["agent_id"],
            "alias": r["alias"],
            "waiting_on": ["a human"],
            "since": iso(r["created_at"]),
            "until": iso(r["expires_at"]),
            "escalation_id": r["id"],
            "subject": r["subject"],
        }
        for r in asks
    ]
    items += [
        {
            "kind": "queue",
            "agent_id": w["agent_id"],
            "alias": w["alias"],
            # What it is in line for: a path (reservation) or an issue (claim).
            "waiting_on": [w.get("path") or w.get("bead_id")],
            "since": w["since"],
            "until": w["deadline"],
            "queue": w["kind"],
            "position": w["position"],
        }
        for w in lines
    ]
    items.sort(key=lambda i: i["since"] or "")
    return {"waiting": items, "count": len(items)}
