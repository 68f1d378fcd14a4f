"""What is new for an agent's model: what ``beadhub hook`` hands it.

Mail not shown yet, conversations with unread messages (and who is waiting
on the agent), answers to the agent's escalations not shown yet, and other
agents' reservations on the files the agent works on (``working``: the
hook sends its worktree's changed files and the file a tool just edited). Once returned with
``mark_shown``, mail counts as *shown* (hub.services.delivery) and answers
as seen, so the next call returns only what came after.
"""

from __future__ import annotations

from typing import Any

from hub.services import chat, delivery, paths, reservations
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from protocol.errors import RpcError

#: Files of the agent's work looked at, at most.
MAX_PATHS = 1000

_NEW_MAIL = """
SELECT m.id, m.thread_id, m.from_alias, m.subject, m.body, m.priority, m.created_at
FROM mail_deliveries d JOIN mail_messages m ON m.id = d.message_id
WHERE d.recipient_id = $2 AND d.project_id = $1 AND d.read_at IS NULL AND d.shown_at IS NULL
ORDER BY d.created_at
LIMIT $3
"""

_NEW_ANSWERS = """
SELECT id, subject, response, responded_by, responded_at FROM escalations
WHERE project_id = $1 AND agent_id = $2 AND responded_at IS NOT NULL
  AND answer_shown_at IS NULL
ORDER BY responded_at
"""

_ANSWERS_SHOWN = """
UPDATE escalations SET answer_shown_at = now()
WHERE project_id = $1 AND agent_id = $2 AND id = ANY($3::uuid[]) AND answer_shown_at IS NULL
"""

#: Longest body quoted in full into the model's context.
QUOTE_CHARS = 2000


def _quote(text: str) -> str:
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + " [...]"


def _patterns(raw: list[str]) -> list[paths.Pattern]:
    found = []
    for path in raw[:MAX_PATHS]:
        try:
            found.append(paths.parse(path))
        except RpcError:
            continue  # a path the hub would refuse to reserve conflicts with nothing
    return found


async def _conflicts(hub: Hub, actor: Actor, working: list[str]) -> list[dict[str, Any]]:
    """Other agents' live reservations on files the agent works on."""
    mine = _patterns(working)
    if not mine:
        return []
    found = []
    for other in await reservations.list_active(hub, actor.project_id):
        if other["holder_agent_id"] == actor.agent_id:
            continue
        held = paths.pattern(other["path"])
        for own in mine:
            if paths.overlaps(own, held):
                found.append(
                    {
                        "path": own.path,
                        "held_path": other["path"],
                        "held_by": other["holder_alias"],
                        "exclusive": other["exclusive"],
                        "reason": other["reason"],
                        "expires_at": other["expires_at"],
                    }
                )
                break
    return found


async def news(
    hub: Hub,
    actor: Actor,
    *,
    mark_shown: bool = True,
    limit: int = 20,
    working: list[str] | None = None,
) -> dict[str, Any]:
    """What the agent's model has not been shown yet. With ``mark_shown``
    the mail and answers returned count as shown (a hook showed them), so
    the next call returns only what came after."""
    agent_id = actor.require_agent()
    async with hub.store.pinned():
        mail_rows = await hub.store.fetch(_NEW_MAIL, actor.project_id, agent_id, limit)
        answer_rows = await hub.store.fetch(_NEW_ANSWERS, actor.project_id, agent_id)
    pending = await chat.pending(hub, actor)
    conflicts = await _conflicts(hub, actor, working or [])
    mail = [
        {
            "message_id": r["id"],
            "thread_id": r["thread_id"],
            "from_alias": r["from_alias"],
            "subject": r["subject"],
            "body": _quote(r["body"]),
            "priority": r["priority"],
            "created_at": iso(r["created_at"]),
        }
        for r in mail_rows
    ]
    answers = [
        {
            "escalation_id": r["id"],
            "subject": r["subject"],
            "response": _quote(r["response"] or ""),
            "responded_by": r["responded_by"],
            "responded_at": iso(r["responded_at"]),
        }
        for r in answer_rows
    ]
    if mark_shown and (mail or answers):
        async with hub.store.pinned():
            if mail:
                ids = [m["message_id"] for m in mail]
                await hub.store.execute(delivery.SHOWN, actor.project_id, agent_id, ids)
            if answers:
                ids = [a["escalation_id"] for a in answers]
                await hub.store.execute(_ANSWERS_SHOWN, actor.project_id, agent_id, ids)
    chats = pending["pending"]
    return {
        "mail": mail,
        "chats": chats,
        "waiting_on_me": [c for c in chats if c.get("sender_waiting")],
        "answers": answers,
        "conflicts": conflicts,
        "unread_mail": pending["messages_waiting"],
        "empty": not (mail or chats or answers or conflicts),
    }
