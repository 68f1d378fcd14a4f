"""Mail: asynchronous messages between the agents (and humans) of a project.

A message is one ``mail_messages`` row plus one ``mail_deliveries`` row per
recipient, which that recipient reads and acks on its own. Sending is one
statement in autocommit (resolve the aliases, insert message, deliveries
and the ``mail`` event) committed before the sender's answer; the
recipients' open sessions get the event right after the commit.

Threads: a message sent without ``thread_id`` starts a thread whose id is
its own message id; replies name that id.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from hub.services import delivery, events, humans, idempotency
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from protocol.errors import ErrorCode, RpcError, invalid_params, not_found

PRIORITIES = ("low", "normal", "high", "urgent")
SUBJECT_MAX = 200


def parse_id(value: str, field: str) -> str:
    """A uuid from the wire, normalised; anything else is a clear error
    rather than a database type error."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise invalid_params(f"{field} {value!r} is not a valid id", field=field) from None


def check_body(hub: Hub, body: str) -> None:
    size = len(body.encode())
    limit = hub.settings.mail_max_body_bytes
    if size > limit:
        raise RpcError(
            ErrorCode.TOO_LARGE,
            f"the body is {size} bytes; the limit is {limit}",
            {"size": size, "limit": limit},
        )


def _message_view(row: Any) -> dict[str, Any]:
    read_at = row["read_at"]
    return {
        "message_id": row["id"],
        "thread_id": row["thread_id"],
        "from_agent_id": row["from_agent_id"],
        # bdh calls an agent a workspace.
        "from_workspace": row["from_agent_id"],
        "from_alias": row["from_alias"],
        "subject": row["subject"],
        "body": row["body"],
        "priority": row["priority"],
        "read": read_at is not None,
        "read_at": iso(read_at),
        "created_at": iso(row["created_at"]),
    }


# -- send -------------------------------------------------------------------

# Concurrent sends are written together (hub.store.group_commit): one call
# of mail_send_batch (migrations 0010, 0012) writes a whole batch in one statement,
# in autocommit: each message's recipients resolved, then the messages,
# their deliveries and their ``mail`` events, committed when it returns
# (see hub.services.events). A message is written only if every alias/id
# it names exists in its project and its thread (if any) does; the caller
# then reads what was missing from its row.
_SEND_BATCH = "SELECT * FROM mail_send_batch($1)"


async def write_sends(
    conn: asyncpg.Connection, sends: list[tuple[Any, ...]]
) -> list[asyncpg.Record]:
    """Write a batch of sends, each ``(message_id, project_id, from_agent_id,
    from_alias, subject, body, priority, thread_id, to_all, aliases,
    agent_ids)``, in one statement (the batch as one jsonb value, migration
    0012): one row per send, in order."""
    return list(await conn.fetch(_SEND_BATCH, sends))


async def _humans_named(hub: Hub, actor: Actor, row: Any, aliases: list[str]) -> list[str] | None:
    """The aliases with every name the send statement did not find replaced
    by a human's inbox alias, or None when some name is nobody's."""
    missing = [a for a in aliases if a not in row["aliases"]]
    if not missing:
        return None
    found = await humans.resolve(hub, actor.project_id, missing)
    if len(found) < len(missing):
        return None
    return list(dict.fromkeys(found.get(a, a) for a in aliases))


def _refusal(row: Any, aliases: list[str], agent_ids: list[str], thread: str | None) -> RpcError:
    """Why the send statement wrote nothing."""
    missing = [a for a in aliases if a not in row["aliases"]]
    missing += [i for i in agent_ids if i not in row["ids"]]
    if missing:
        return not_found(
            f"no agent {missing[0]!r} in this project", missing=missing, alias=missing[0]
        )
    if not row["ids"]:
        return invalid_params("there is no other agent in this project to send to")
    return not_found(f"no mail thread {thread} in this project", thread_id=thread)


async def send(
    hub: Hub,
    actor: Actor,
    *,
    body: str,
    to: list[str] | None = None,
    to_agent_ids: list[str] | None = None,
    to_all: bool = False,
    subject: str = "",
    priority: str = "normal",
    thread_id: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Send one message to the agents named by alias (``to``) or id
    (``to_agent_ids``, bdh's workspace ids), or to every other agent of the
    project (``to_all``). With ``idempotency_key``, a repeat within 24
    hours returns the first answer and sends nothing (the key is claimed in
    the send's own statement: see migration 0024)."""
    check_body(hub, body)
    if not body:
        raise invalid_params("the body is empty")
    if len(subject) > SUBJECT_MAX:
        raise invalid_params(f"the subject is over {SUBJECT_MAX} characters")
    if priority not in PRIORITIES:
        raise invalid_params(f"priority must be one of {', '.join(PRIORITIES)}")
    aliases = list(dict.fromkeys(to or []))
    agent_ids = list(dict.fromkeys(parse_id(i, "to_agent_id") for i in to_agent_ids or []))
    if not (aliases or agent_ids or to_all):
        raise invalid_params("name at least one recipient, or send to_all")
    thread = parse_id(thread_id, "thread_id") if thread_id else None
    message_id = str(uuid.uuid4())
    request = {
        "to": to,
        "to_agent_ids": to_agent_ids,
        "to_all": to_all,
        "subject": subject,
        "body": body,
        "priority": priority,
        "thread_id": thread_id,
    }
    keyed: tuple[str | None, ...] = (None, None, None)
    if idempotency_key is not None:
        idempotency.check_key(idempotency_key)
        keyed = (
            idempotency_key,
            idempotency.principal(actor),
            idempotency.fingerprint(request),
        )

    def submit(names: list[str]) -> Any:
        return hub.store.group_commit("mail.send", lambda: write_sends).submit(
            message_id,
            actor.project_id,
            actor.agent_id,
            actor.alias,
            subject,
            body,
            priority,
            thread,
            to_all,
            names,
            agent_ids,
            *keyed,
        )

    row = await submit(aliases)
    if row["key_taken"]:
        return await _send_again(hub, actor, request, idempotency_key)
    if row["created_at"] is None:
        # Humans are addressed as human:<name> (or by a known human's name);
        # their inbox rows are made on first use, so only a send that named
        # someone the batch did not find pays for looking humans up.
        named = await _humans_named(hub, actor, row, aliases)
        if named is not None:
            aliases = named
            row = await submit(aliases)
            if row["key_taken"]:
                return await _send_again(hub, actor, request, idempotency_key)
        if row["created_at"] is None:
            raise _refusal(row, aliases, agent_ids, thread)
    # Committed (with the concurrent senders' batch): now the recipients
    # may hear of it.
    await events.publish_rows(hub, [row])
    created_at = iso(row["created_at"])
    return {
        "message_id": message_id,
        "thread_id": thread or message_id,
        "status": "delivered",
        "delivered_at": created_at,
        "created_at": created_at,
        "to": list(row["aliases"]),
        "recipients": len(row["ids"]),
    }


async def _send_again(
    hub: Hub, actor: Actor, request: dict[str, Any], key: str | None
) -> dict[str, Any]:
    """A keyed send whose key was taken: the first answer, the slow way
    (hub.services.idempotency reads it, or waits for the first send's
    commit, or refuses a key used for another request)."""
    assert key is not None
    params = {k: v for k, v in request.items() if v is not None}
    return await idempotency.run(
        hub, actor, "mail.send", key, request, lambda: send(hub, actor, **params)
    )


# -- inbox ------------------------------------------------------------------

_INBOX = """
SELECT m.id, m.thread_id, m.from_agent_id, m.from_alias, m.subject, m.body, m.priority,
       m.created_at, d.read_at
FROM mail_deliveries d
JOIN mail_messages m ON m.id = d.message_id
WHERE d.recipient_id = $2 AND d.project_id = $1
  AND (NOT $3 OR d.read_at IS NULL)
  AND ($4::text IS NULL OR m.from_alias = $4)
  AND ($5::timestamptz IS NULL OR (d.created_at, d.message_id) < ($5, $6::uuid))
ORDER BY d.created_at DESC, d.message_id DESC
LIMIT $7 OFFSET $8
"""

_CURSOR = """
SELECT created_at FROM mail_deliveries
WHERE message_id = $1 AND recipient_id = $2 AND project_id = $3
"""


async def inbox(
    hub: Hub,
    actor: Actor,
    *,
    unread_only: bool = False,
    from_alias: str | None = None,
    limit: int = 50,
    before: str | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    """The caller's messages, newest first. Page with ``before`` (the last
    message id of the previous page, as ``next_before``) or ``offset``.
    A human reads the inbox of ``human:<name>``."""
    agent_id = await mailbox(hub, actor)
    before_at = None
    before_id = parse_id(before, "before") if before else None
    if before_id is not None:
        before_at = await hub.store.fetchval(_CURSOR, before_id, agent_id, actor.project_id)
        if before_at is None:
            raise not_found(f"no message {before_id} in your inbox", message_id=before_id)
    rows = await hub.store.fetch(
        _INBOX,
        actor.project_id,
        agent_id,
        unread_only,
        from_alias,
        before_at,
        before_id,
        limit + 1,
        offset,
    )
    has_more = len(rows) > limit
    messages = [_message_view(r) for r in rows[:limit]]
    delivery.opened(hub, agent_id, [m["message_id"] for m in messages])
    return {
        "messages": messages,
        "count": len(messages),
        "has_more": has_more,
        "next_before": messages[-1]["message_id"] if has_more else None,
        "unread_count": await unread_count(hub, actor.project_id, agent_id),
    }


async def mailbox(hub: Hub, actor: Actor) -> str:
    """Whose deliveries the caller reads: its own, or a human's inbox row."""
    if actor.agent_id is not None:
        return actor.agent_id
    return await humans.inbox_id(hub, actor)


async def unread_count(hub: Hub, project_id: str, agent_id: str) -> int:
    """Unread mail of one agent (bdh's ``messages_waiting``)."""
    value = await hub.store.fetchval(
        "SELECT count(*) FROM mail_deliveries "
        "WHERE recipient_id = $2 AND project_id = $1 AND read_at IS NULL",
        project_id,
        agent_id,
    )
    return int(value)


# -- ack ----------------------------------------------------------------------

_ACK = """
WITH acked AS (
    UPDATE mail_deliveries d SET read_at = coalesce(d.read_at, now())
    WHERE d.recipient_id = $2 AND d.project_id = $1 AND d.message_id = ANY($3::uuid[])
    RETURNING d.message_id, d.read_at
)
SELECT a.message_id, a.read_at, m.from_agent_id
FROM acked a JOIN mail_messages m ON m.id = a.message_id
"""


async def ack(hub: Hub, actor: Actor, message_ids: list[str]) -> dict[str, Any]:
    """Mark the caller's copies read. Only a recipient can ack its copy: an
    id that is not in the caller's inbox is NOT_FOUND and nothing changes."""
    agent_id = await mailbox(hub, actor)
    wanted = list(dict.fromkeys(parse_id(m, "message_id") for m in message_ids))
    if not wanted:
        raise invalid_params("name at least one message id")
    async with events.change(hub, actor.project_id) as tx:
        rows = await tx.conn.fetch(_ACK, actor.project_id, agent_id, wanted)
        acked = {r["message_id"]: r for r in rows}
        missing = [m for m in wanted if m not in acked]
        if missing:
            raise not_found(
                f"message {missing[0]} is not in your inbox", missing=missing, message_id=missing[0]
            )
        result = [{"message_id": m, "acknowledged_at": iso(acked[m]["read_at"])} for m in wanted]
        senders = {r["from_agent_id"] for r in rows if r["from_agent_id"] is not None}
        tx.emit(
            "mail.read",
            {"reader_agent_id": agent_id, "reader_alias": actor.alias, "messages": result},
            recipients=sorted(senders | {agent_id}),
        )
    return {"acknowledged": result, "count": len(result)}


# -- threads -------------------------------------------------------------------

_THREAD = """
SELECT m.id, m.thread_id, m.from_agent_id, m.from_alias, m.subject, m.body, m.priority,
       m.created_at,
       array_agg(a.alias ORDER BY a.alias) AS to_aliases,
       jsonb_agg(jsonb_build_object('alias', a.alias, 'read_at', wire_time(d.read_at))
                 ORDER BY a.alias) AS deliveries,
       max(d.read_at) FILTER (WHERE d.recipient_id = $5) AS read_at,
       coalesce(bool_or(d.recipient_id = $5), false) AS to_me
FROM mail_messages m
JOIN mail_deliveries d ON d.message_id = m.id
JOIN agents a ON a.id = d.recipient_id
WHERE m.project_id = $1 AND m.thread_id = $2
GROUP BY m.id
HAVING $3::uuid IS NULL OR m.from_agent_id = $3 OR bool_or(d.recipient_id = $3)
ORDER BY m.created_at, m.id
LIMIT $4
"""


async def thread(hub: Hub, actor: Actor, thread_id: str, limit: int = 200) -> dict[str, Any]:
    """The messages of a thread the caller sent or received, oldest first
    (a human on the dashboard sees the whole thread)."""
    thread = parse_id(thread_id, "thread_id")
    # Whose copies count as "read": the caller's, or the human's inbox.
    reader = await mailbox(hub, actor)
    rows = await hub.store.fetch(_THREAD, actor.project_id, thread, actor.agent_id, limit, reader)
    if not rows:
        raise not_found(f"no mail thread {thread} for you in this project", thread_id=thread)
    messages = []
    for row in rows:
        view = _message_view(row)
        view["to"] = list(row["to_aliases"])
        # Each recipient's copy: read (acked) when, or not yet.
        view["deliveries"] = row["deliveries"]
        # Messages the caller sent count as read for the caller.
        view["read"] = view["read"] or not row["to_me"]
        messages.append(view)
    return {
        "thread_id": thread,
        "subject": messages[0]["subject"],
        "messages": messages,
        "count": len(messages),
    }
