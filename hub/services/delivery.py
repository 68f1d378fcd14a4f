"""Delivery states of mail, and what is new for an agent's model.

Each copy of a message (a ``mail_deliveries`` row) moves through

    stored -> pushed (a session of the recipient got the ``mail`` event)
           -> shown  (a hook put it into the recipient's model context)
           -> read   (the recipient's inbox or thread listing returned it)
           -> acked  (``mail.ack``; the row's ``read_at``)

and the sender sees every recipient's furthest state with its times
(:func:`receipts`). ``pushed`` and ``read`` happen on hot paths (every
event pushed, every inbox read), so they are noted in memory and written
in batches, one statement per kind and batch, a moment later: a state is
never earlier than it happened, and a hub that dies before a flush only
loses that advisory timestamp, never the message. ``shown`` comes from a
hook and is written at once.

What a hook shows the model is :mod:`hub.services.news`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

# mail imports this module (it notes what its inbox returns): refer to
# mail's helpers through the module, resolved at call time.
from hub.services import background, clock, mail
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from protocol.errors import invalid_params, not_found

STATES = ("stored", "pushed", "shown", "read", "acked")
#: How long noted states wait for company before they are written.
FLUSH_DELAY_SECONDS = 0.2


# -- noted states, written in batches ---------------------------------------------------


class _Batch:
    """This instance's noted states, not written yet."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        #: (column, message_id, recipient_id) -> when it happened
        self.noted: dict[tuple[str, str, str], datetime] = {}
        self.writer = background.Batched(
            FLUSH_DELAY_SECONDS, self.write, lambda: bool(self.noted), "mail delivery states"
        )

    async def write(self) -> None:
        noted, self.noted = self.noted, {}
        by_column: dict[str, list[tuple[str, str, datetime]]] = {}
        for (column, message_id, recipient_id), at in noted.items():
            by_column.setdefault(column, []).append((message_id, recipient_id, at))
        for column, rows in by_column.items():
            await self.hub.store.execute(
                _NOTE.format(column=column),
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
            )


_BATCHES: dict[int, _Batch] = {}

_NOTE = """
UPDATE mail_deliveries d SET {column} = least(coalesce(d.{column}, x.at), x.at)
FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS x(message_id, recipient_id, at)
WHERE d.message_id = x.message_id AND d.recipient_id = x.recipient_id
"""
_COLUMNS = {"pushed": "pushed_at", "read": "opened_at"}


def _note(hub: Hub, kind: str, recipient_id: str, message_ids: list[str]) -> None:
    batch = _BATCHES.get(id(hub))
    if batch is None:
        batch = _BATCHES[id(hub)] = _Batch(hub)
    now = clock.now()
    for message_id in message_ids:
        batch.noted.setdefault((_COLUMNS[kind], message_id, recipient_id), now)
    batch.writer.arm()


def pushed(hub: Hub, recipient_id: str, message_id: str) -> None:
    """A session of ``recipient_id`` was handed the message's event."""
    _note(hub, "pushed", recipient_id, [message_id])


def opened(hub: Hub, recipient_id: str, message_ids: list[str]) -> None:
    """The recipient's listing returned these messages (bodies included)."""
    if message_ids:
        _note(hub, "read", recipient_id, message_ids)


async def flush(hub: Hub) -> None:
    """Write what this instance has noted now (before reading states)."""
    batch = _BATCHES.get(id(hub))
    if batch is not None:
        await batch.writer.flush()


async def stop(hub: Hub) -> None:
    """The hub stops: write what is noted before its store closes."""
    await flush(hub)
    _BATCHES.pop(id(hub), None)


# -- shown and receipts -------------------------------------------------------------------

SHOWN = """
UPDATE mail_deliveries SET shown_at = coalesce(shown_at, now())
WHERE project_id = $1 AND recipient_id = $2 AND message_id = ANY($3::uuid[])
"""


async def mark_shown(hub: Hub, actor: Actor, message_ids: list[str]) -> None:
    agent_id = actor.require_agent()
    if message_ids:
        await hub.store.execute(SHOWN, actor.project_id, agent_id, message_ids)


_RECEIPTS = """
SELECT m.id AS message_id, m.subject, m.created_at AS sent_at, a.alias AS recipient,
       d.recipient_id, d.created_at AS stored_at, d.pushed_at, d.shown_at,
       d.opened_at, d.read_at AS acked_at
FROM mail_messages m
JOIN mail_deliveries d ON d.message_id = m.id
JOIN agents a ON a.id = d.recipient_id
WHERE m.project_id = $1
  AND ($2::uuid IS NULL OR m.from_agent_id = $2)
  AND m.id = ANY($3::uuid[])
ORDER BY m.created_at DESC, a.alias
"""

_LAST_SENT = """
SELECT id FROM mail_messages
WHERE project_id = $1 AND from_agent_id = $2
ORDER BY created_at DESC LIMIT $3
"""


def _state(row: Any) -> dict[str, Any]:
    times = {
        "stored": row["stored_at"],
        "pushed": row["pushed_at"],
        "shown": row["shown_at"],
        # Acking is reading too.
        "read": row["opened_at"] or row["acked_at"],
        "acked": row["acked_at"],
    }
    state = next(s for s in reversed(STATES) if times[s] is not None)
    return {
        "alias": row["recipient"],
        "agent_id": row["recipient_id"],
        "state": state,
        **{f"{s}_at": iso(t) for s, t in times.items()},
    }


async def receipts(
    hub: Hub, actor: Actor, message_ids: list[str] | None = None, limit: int = 20
) -> dict[str, Any]:
    """Each recipient's delivery state of messages the caller sent (a human
    sees every message of the project); without ids, the caller's last
    ``limit`` sent messages. An id the caller did not send is NOT_FOUND."""
    if message_ids is None:
        agent_id = actor.require_agent()
        rows = await hub.store.fetch(_LAST_SENT, actor.project_id, agent_id, limit)
        wanted = [r["id"] for r in rows]
    else:
        wanted = list(dict.fromkeys(mail.parse_id(m, "message_id") for m in message_ids))
        if not wanted:
            raise invalid_params("name at least one message id")
    await flush(hub)
    rows = await hub.store.fetch(_RECEIPTS, actor.project_id, actor.agent_id, wanted)
    messages: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = messages.setdefault(
            row["message_id"],
            {
                "message_id": row["message_id"],
                "subject": row["subject"],
                "sent_at": iso(row["sent_at"]),
                "recipients": [],
            },
        )
        entry["recipients"].append(_state(row))
    missing = [m for m in wanted if m not in messages]
    if missing and message_ids is not None:
        raise not_found(f"you sent no message {missing[0]}", missing=missing, message_id=missing[0])
    ordered = [messages[m] for m in wanted if m in messages]
    for entry in ordered:
        states = [r["state"] for r in entry["recipients"]]
        # The message as a whole is as far as its least advanced copy.
        entry["state"] = min(states, key=STATES.index)
    return {"messages": ordered, "count": len(ordered)}
