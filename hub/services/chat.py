"""Chat: conversations between agents, with send-and-wait.

A conversation (chat session) is identified by its participants: opening a
chat with the same set of agents again reuses it. Every message is stored
(and its ``chat.message`` event recorded) before the sender gets an answer:
into an existing conversation as one statement in autocommit (one round
trip; see hub.services.events), and with the opening of a new one as one
transaction.

Send-and-wait is driven by bus events, never by polling the database: the
waiter registers a relay listener on the project channel *before* its own
message commits (so a reply cannot slip in between), then sleeps on an
asyncio event that the listener sets. It wakes for

- a ``chat.message`` from another participant of the session: a reply
  (``hang_on`` instead extends the deadline; ``sender_leaving`` ends the
  wait as ``target_left``),
- a ``chat.read`` by another participant: extends the deadline,
- a ``presence`` event saying a target went offline: when every target is
  gone the wait ends as ``target_left``.

The relay receives other instances' events from Redis, so this works across
instances unchanged. While waiting, ``chat_participants.waiting_until``
holds the waiter's deadline, so ``chat.pending`` on any instance can tell
the other side that the sender is waiting and for how long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from hub.services import background, clock, events, humans, idempotency, mail, webhooks
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from hub.services.mail import check_body, parse_id
from protocol.errors import RpcError, invalid_params, not_found

logger = logging.getLogger("beadhub.chat")

#: How much longer a waiting sender waits when a target says "hang on".
HANG_ON_EXTENSION_SECONDS = 60
#: ... and when a target opens (reads) the conversation.
READ_EXTENSION_SECONDS = 30
#: A stream replays the caller's own last message (and what followed it)
#: when that message is at most this old: bdh posts, then opens the stream.
STREAM_REPLAY_SECONDS = 60

_WATCHED = frozenset({"chat.message", "chat.read", "presence"})


# -- queries ------------------------------------------------------------------

_PARTICIPANTS = """
SELECT p.agent_id, a.alias, p.last_read_seq, p.waiting_until, p.left_at,
       coalesce(p.waiting_until > now(), false) AS listening
FROM chat_participants p JOIN agents a ON a.id = p.agent_id
WHERE p.session_id = $1 AND p.project_id = $2
ORDER BY a.alias
"""

_AGENTS_BY_ALIAS = """
SELECT id, alias FROM agents
WHERE project_id = $1 AND deleted_at IS NULL AND alias = ANY($2::text[])
"""

_CREATE_SESSION = """
INSERT INTO chat_sessions (project_id, participant_key, created_by) VALUES ($1, $2, $3)
ON CONFLICT (project_id, participant_key) DO NOTHING
RETURNING id
"""

_FIND_SESSION = "SELECT id FROM chat_sessions WHERE project_id = $1 AND participant_key = $2"

_ADD_PARTICIPANTS = """
INSERT INTO chat_participants (session_id, agent_id, project_id)
SELECT $1, unnest($2::uuid[]), $3
ON CONFLICT DO NOTHING
"""

# One statement stores the message and updates the sender's own state: it
# has read up to its message, has left or not, and waits or not.
_INSERT_MESSAGE = """
WITH m AS (
    INSERT INTO chat_messages
        (session_id, project_id, from_agent_id, from_alias, body, sender_leaving, hang_on)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    RETURNING id, seq, created_at
), me AS (
    UPDATE chat_participants p
    SET last_read_seq = greatest(p.last_read_seq, m.seq),
        left_at = CASE WHEN $6 THEN m.created_at END,
        waiting_until = $8
    FROM m
    WHERE p.session_id = $1 AND p.agent_id = $3
)
SELECT id, seq, created_at FROM m
"""

# A message into an existing conversation, named by ``session_id`` ($1) or
# by its other participants' aliases ($9), as ONE statement in autocommit
# (one round trip, committed when it returns; see hub.services.events): it
# finds the session and its participants, and only when the caller is one
# of them stores the message, the caller's own state (as _INSERT_MESSAGE)
# and the ``chat.message`` event. Otherwise it writes nothing and returns
# no message: the caller is not a participant, or (by aliases) there is no
# such conversation yet and the transactional path opens it.
_SEND_EVENT = f"""
SELECT $2, 'chat.message', array(SELECT agent_id FROM parts ORDER BY alias),
       jsonb_build_object(
           'session_id', m.session_id,
           'message_id', m.id,
           'from_agent_id', $3::uuid,
           'from_alias', $4::text,
           'body', $5::text,
           'timestamp', {events.iso_sql("m.created_at")},
           'sender_leaving', $6::boolean,
           'sender_waiting', $10::boolean,
           'hang_on', $7::boolean,
           'extends_wait_seconds', $11::integer,
           'participants', array(SELECT alias FROM parts ORDER BY alias))
FROM m"""

_SEND = f"""
WITH named AS (
    SELECT id FROM agents
    WHERE $1::uuid IS NULL AND project_id = $2 AND deleted_at IS NULL
      AND alias = ANY($9::text[])
), s AS (
    SELECT $1::uuid AS id WHERE $1::uuid IS NOT NULL
    UNION ALL
    -- The key _open gives a conversation: its members' ids, sorted.
    SELECT c.id FROM chat_sessions c
    WHERE $1::uuid IS NULL AND c.project_id = $2
      AND (SELECT count(*) FROM named) = cardinality($9::text[])
      AND c.participant_key = (
          SELECT string_agg(k::text, ',' ORDER BY k::text COLLATE "C")
          FROM (SELECT $3::uuid AS k UNION SELECT id FROM named) keys
      )
), parts AS (
    SELECT p.agent_id, a.alias, p.left_at,
           coalesce(p.waiting_until > now(), false) AS listening
    FROM s
    JOIN chat_participants p ON p.session_id = s.id
    JOIN agents a ON a.id = p.agent_id
    WHERE p.project_id = $2
), m AS (
    INSERT INTO chat_messages
        (session_id, project_id, from_agent_id, from_alias, body, sender_leaving, hang_on)
    SELECT s.id, $2, $3, $4, $5, $6, $7 FROM s
    WHERE EXISTS (SELECT 1 FROM parts WHERE agent_id = $3)
    RETURNING id, session_id, seq, created_at
), me AS (
    UPDATE chat_participants p
    SET last_read_seq = greatest(p.last_read_seq, m.seq),
        left_at = CASE WHEN $6 THEN m.created_at END,
        waiting_until = $8
    FROM m
    WHERE p.session_id = m.session_id AND p.agent_id = $3
), ev AS ({events.insert_cte(_SEND_EVENT)})
SELECT m.session_id, m.id AS message_id, m.created_at,
       array(SELECT agent_id FROM parts ORDER BY alias) AS part_ids,
       array(SELECT alias FROM parts ORDER BY alias) AS part_aliases,
       array(SELECT left_at FROM parts ORDER BY alias) AS part_left_at,
       array(SELECT listening FROM parts ORDER BY alias) AS part_listening,
       {events.returned()}
FROM (SELECT) one LEFT JOIN m ON true LEFT JOIN ev ON true
"""

_SET_WAITING = """
UPDATE chat_participants SET waiting_until = $3 WHERE session_id = $1 AND agent_id = $2
"""

# Clears only our own wait: another wait by the same agent may have
# replaced it meanwhile.
_CLEAR_WAITING = """
UPDATE chat_participants SET waiting_until = NULL
WHERE session_id = $1 AND agent_id = $2 AND waiting_until = $3
"""

_MESSAGE_COLUMNS = "id, seq, from_agent_id, from_alias, body, sender_leaving, hang_on, created_at"


# -- views ----------------------------------------------------------------------


def _participant_list(parts: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [{"agent_id": p["agent_id"], "alias": p["alias"]} for p in parts]


def _message_view(row: Any, read_seq: int, me: str) -> dict[str, Any]:
    return {
        "message_id": row["id"],
        "from_agent_id": row["from_agent_id"],
        "from_alias": row["from_alias"],
        "from_agent": row["from_alias"],
        "body": row["body"],
        "timestamp": iso(row["created_at"]),
        "sender_leaving": row["sender_leaving"],
        "hang_on": row["hang_on"],
        "read": row["seq"] <= read_seq or row["from_agent_id"] == me,
    }


def _wire(message: dict[str, Any]) -> dict[str, Any]:
    """A bus message as a client sees the event (no recipients, and none of
    the keys transports cache on the shared dict)."""
    return {k: message[k] for k in ("type", "id", "cursor", "project_id", "at", "data")}


def _bdh_event(message: dict[str, Any]) -> dict[str, Any]:
    """A chat bus event in the shape of bdh's stream Event."""
    data = message["data"]
    if message["type"] == "chat.read":
        return {
            "type": "read_receipt",
            "session_id": data["session_id"],
            "reader_alias": data["reader_alias"],
            "up_to_message_id": data["up_to_message_id"],
            "extends_wait_seconds": data["extends_wait_seconds"],
            "timestamp": data["timestamp"],
        }
    return {
        "type": "message",
        "session_id": data["session_id"],
        "message_id": data["message_id"],
        "from_agent": data["from_alias"],
        "from_agent_id": data["from_agent_id"],
        "body": data["body"],
        "timestamp": data["timestamp"],
        "sender_leaving": data["sender_leaving"],
        "hang_on": data["hang_on"],
        "extends_wait_seconds": data["extends_wait_seconds"],
    }


# -- session lookup ----------------------------------------------------------------


def _not_member(session_id: str) -> RpcError:
    # Someone else's conversation looks the same as a missing one.
    return not_found(f"no chat session {session_id} for you", session_id=session_id)


def _member(parts: list[asyncpg.Record], agent_id: str, session_id: str) -> asyncpg.Record:
    for part in parts:
        if part["agent_id"] == agent_id:
            return part
    raise _not_member(session_id)


async def _open(
    hub: Hub, conn: asyncpg.Connection, actor: Actor, agent_id: str, aliases: list[str]
) -> str:
    """The session of exactly the caller and these agents, created if new."""
    wanted = list(dict.fromkeys(aliases))
    rows = await conn.fetch(_AGENTS_BY_ALIAS, actor.project_id, wanted)
    found = {r["alias"]: r["id"] for r in rows}
    missing = [a for a in wanted if a not in found]
    if missing:
        # A human (human:<name>) gets its inbox row on first use.
        named = await humans.resolve(hub, actor.project_id, missing)
        if len(named) == len(missing):
            rows = await conn.fetch(_AGENTS_BY_ALIAS, actor.project_id, list(named.values()))
            ids = {r["alias"]: r["id"] for r in rows}
            found.update({a: ids[h] for a, h in named.items() if h in ids})
            missing = [a for a in wanted if a not in found]
    if missing:
        raise not_found(
            f"no agent {missing[0]!r} in this project", missing=missing, alias=missing[0]
        )
    members = sorted({agent_id, *found.values()})
    if len(members) < 2:
        raise invalid_params("a chat needs at least one other agent")
    key = ",".join(members)
    session_id = await conn.fetchval(_CREATE_SESSION, actor.project_id, key, agent_id)
    if session_id is not None:
        await conn.execute(_ADD_PARTICIPANTS, session_id, members, actor.project_id)
        return str(session_id)
    # Created before, or by a concurrent open that has committed by now.
    session_id = await conn.fetchval(_FIND_SESSION, actor.project_id, key)
    assert session_id is not None
    return str(session_id)


def _listening(parts: Sequence[Mapping[str, Any]]) -> set[str]:
    """Who is listening on the conversation right now: an open stream or a
    waiting send keeps ``waiting_until`` in the future (and clears it when
    it ends), on any instance. Being online is not listening."""
    return {p["agent_id"] for p in parts if p["listening"]}


# -- waiting -----------------------------------------------------------------------


class _Listener:
    """Collects the project's chat and presence events for one waiter and
    wakes it; runs inside the relay's delivery, so it only appends.

    If the bus reports a gap (Redis restarted, an instance died between a
    commit and its publish), the waiter reads the events of the gap back
    from the store (:meth:`catch_up`), so a reply the bus dropped still ends
    the wait. Events are taken once each, by id."""

    def __init__(self, hub: Hub, project_id: str, agent_id: str) -> None:
        self.hub = hub
        self.project_id = project_id
        self.agent_id = agent_id
        self.inbox: list[dict[str, Any]] = []
        self.wake = asyncio.Event()
        self._ids: set[str] = set()
        self._gap: float | None = None

    def __call__(self, message: dict[str, Any]) -> None:
        if message.get("type") not in _WATCHED or message["id"] in self._ids:
            return
        self._ids.add(message["id"])
        self.inbox.append(message)
        self.wake.set()

    def on_gap(self, seconds: float) -> None:
        self._gap = max(self._gap or 0.0, seconds)
        self.wake.set()

    async def take(self) -> list[dict[str, Any]]:
        if self._gap is not None:
            seconds, self._gap = self._gap, None
            cursor = await events.cursor_before(self.hub, self.project_id, seconds)
            for event in await events.since(self.hub, self.project_id, self.agent_id, cursor):
                self(event.bus_message())
        taken, self.inbox = self.inbox, []
        self.wake.clear()
        return taken

    def listening(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.hub.relay.listening(events.channel(self.project_id), self, on_gap=self.on_gap)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()


class _Deadline:
    """A monotonic deadline mirrored into ``chat_participants.waiting_until``
    so other instances can see it."""

    def __init__(self, hub: Hub, session_id: str, agent_id: str, seconds: float) -> None:
        self.hub = hub
        self.session_id = session_id
        self.agent_id = agent_id
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.at = self.started + seconds
        self.stored: datetime | None = None

    def remaining(self) -> float:
        return self.at - self.loop.time()

    def wall(self) -> datetime:
        return clock.now() + timedelta(seconds=max(self.remaining(), 0))

    async def store(self) -> None:
        self.stored = self.wall()
        await self.hub.store.execute(_SET_WAITING, self.session_id, self.agent_id, self.stored)

    async def extend(self, seconds: float) -> None:
        """Push the deadline ``seconds`` further (from now if it has passed,
        as bdh does), never beyond the hub's longest wait from now."""
        if seconds <= 0:
            return
        now = self.loop.time()
        limit = now + self.hub.settings.chat_max_wait_seconds
        self.at = min(max(self.at, now) + seconds, limit)
        await self.store()

    async def clear(self) -> None:
        """End the wait in the store. It runs when the waiter goes away,
        usually because its request or socket task is being cancelled: the
        update runs in a task of its own, so that cancellation (repeated,
        under a cancel scope) cannot stop it, and the caller waits for it
        only while it is not cancelled itself."""
        if self.stored is None:
            return
        stored, self.stored = self.stored, None
        task = background.spawn(self._clear(stored), _CLEARING)
        await asyncio.shield(task)

    async def _clear(self, stored: datetime) -> None:
        try:
            await self.hub.store.execute(_CLEAR_WAITING, self.session_id, self.agent_id, stored)
        except Exception:
            # waiting_until expires on its own; pending ignores a past one.
            logger.warning("could not clear the wait on chat session %s", self.session_id)


#: Clean-ups under way, held so they are not collected before they finish.
_CLEARING: set[asyncio.Task[None]] = set()


async def _wait_for_reply(
    agent_id: str,
    sent: dict[str, Any],
    listener: _Listener,
    deadline: _Deadline,
    targets: dict[str, str],
) -> dict[str, Any]:
    session_id = sent["session_id"]
    seen: list[dict[str, Any]] = []
    gone: set[str] = set()
    status, reply = "timeout", None
    while status == "timeout":
        for message in await listener.take():
            data = message["data"]
            kind = message["type"]
            if kind == "presence":
                target = data.get("agent_id")
                if target not in targets:
                    continue
                if data.get("online"):
                    gone.discard(target)
                    continue
                gone.add(target)
                seen.append(_wire(message))
                if gone >= targets.keys():
                    status = "target_left"
                    break
                continue
            if data.get("session_id") != session_id:
                continue
            if kind == "chat.read":
                if data.get("reader_agent_id") == agent_id:
                    continue
                seen.append(_wire(message))
                await deadline.extend(data.get("extends_wait_seconds") or 0)
                continue
            sender = data.get("from_agent_id")
            if sender == agent_id or sender not in targets:
                continue
            seen.append(_wire(message))
            if data.get("hang_on"):
                await deadline.extend(data.get("extends_wait_seconds") or 0)
                continue
            reply = {
                "message_id": data["message_id"],
                "from_agent_id": sender,
                "from_alias": data["from_alias"],
                "body": data["body"],
                "timestamp": data["timestamp"],
                "sender_leaving": data["sender_leaving"],
            }
            status = "target_left" if data["sender_leaving"] else "replied"
            break
        if status != "timeout":
            break
        if deadline.remaining() <= 0:
            break
        await listener.sleep(deadline.remaining())
    return {
        "status": status,
        "reply": reply,
        "events": seen,
        "waited_seconds": round(deadline.loop.time() - deadline.started, 3),
    }


# -- send ------------------------------------------------------------------------------


async def send(
    hub: Hub,
    actor: Actor,
    *,
    body: str,
    to: list[str] | None = None,
    session_id: str | None = None,
    wait: float = 0,
    hang_on: bool = False,
    leaving: bool = False,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Send a chat message to the conversation with exactly the agents in
    ``to`` (opened if new) or into ``session_id``; with ``wait`` (seconds)
    block until a reply, the deadline or the targets leaving.

    ``status`` is ``sent`` without a wait, else ``replied``, ``timeout`` or
    ``target_left``. ``idempotency_key`` with a wait: the message is stored
    once per key (atomically with the key), and a repeat waits again for
    the reply (without a wait the transport makes the whole call
    idempotent, hub.services.idempotency)."""
    agent_id = await mail.mailbox(hub, actor)
    check_body(hub, body)
    if not body:
        raise invalid_params("the body is empty")
    clock.check_wait(wait, hub.settings.chat_max_wait_seconds, zero=True)
    if (to is None) == (session_id is None):
        raise invalid_params("give either `to` (a list of aliases) or `session_id`")
    sid = parse_id(session_id, "session_id") if session_id is not None else None
    listener = _Listener(hub, actor.project_id, agent_id) if wait > 0 else None
    async with listener.listening() if listener else contextlib.nullcontext():
        if idempotency_key is not None and wait > 0:
            sent, parts = await _store_once(
                hub, actor, agent_id, idempotency_key, body, to, sid, wait, hang_on, leaving
            )
        else:
            sent, parts = await _store(hub, actor, agent_id, body, to, sid, wait, hang_on, leaving)
        targets = {p["agent_id"]: p["alias"] for p in parts if p["agent_id"] != agent_id}
        if not actor.is_human and any(humans.is_human_alias(a) for a in targets.values()):
            await _tell_humans(hub, actor, sent, body, targets)
        listening = _listening(parts)
        sent["targets_connected"] = [a for i, a in targets.items() if i in listening]
        sent["targets_left"] = [
            p["alias"] for p in parts if p["agent_id"] in targets and p["left_at"] is not None
        ]
        waiting_until = sent.pop("_waiting_until")
        if listener is None:
            return {**sent, "status": "sent", "reply": None, "events": [], "waited_seconds": 0}
        deadline = _Deadline(hub, sent["session_id"], agent_id, wait)
        deadline.stored = waiting_until
        try:
            outcome = await _wait_for_reply(agent_id, sent, listener, deadline, targets)
        finally:
            await deadline.clear()
    return {**sent, **outcome}


async def _tell_humans(
    hub: Hub, actor: Actor, sent: dict[str, Any], body: str, targets: dict[str, str]
) -> None:
    """An agent wrote to a human: the project's webhooks may say so outside
    the page."""
    data = {
        "session_id": sent["session_id"],
        "message_id": sent["message_id"],
        "from_alias": actor.alias,
        "to": sorted(targets.values()),
        "body": body,
        "timestamp": sent["timestamp"],
    }
    await webhooks.notify(hub, actor.project_id, "chat.human", data)


async def _store_once(
    hub: Hub,
    actor: Actor,
    agent_id: str,
    key: str,
    body: str,
    to: list[str] | None,
    session_id: str | None,
    wait: float,
    hang_on: bool,
    leaving: bool,
) -> tuple[dict[str, Any], list[Mapping[str, Any]]]:
    """:func:`_store` once per idempotency key: its answer kept as JSON."""

    async def store() -> dict[str, Any]:
        sent, parts = await _store(
            hub, actor, agent_id, body, to, session_id, wait, hang_on, leaving
        )
        until = sent.pop("_waiting_until")
        return {
            "sent": sent,
            "waiting_until": iso(until),
            "parts": [{**p, "left_at": iso(p["left_at"])} for p in parts],
        }

    request = {"to": to, "session_id": session_id, "body": body, "wait": wait,
               "hang_on": hang_on, "leaving": leaving}  # fmt: skip
    kept = await idempotency.run(hub, actor, "chat.send", key, request, store)
    until = kept["waiting_until"]
    sent = {**kept["sent"], "_waiting_until": clock.parse(until) if until else None}
    parts: list[Mapping[str, Any]] = [
        {**p, "left_at": clock.parse(p["left_at"]) if p["left_at"] else None} for p in kept["parts"]
    ]
    return sent, parts


_REPLY_AFTER = f"""
SELECT {_MESSAGE_COLUMNS} FROM chat_messages
WHERE session_id = $1 AND seq > $2 AND from_agent_id IS DISTINCT FROM $3 AND NOT hang_on
ORDER BY seq LIMIT 1
"""
_MY_LAST_SEQ = "SELECT max(seq) FROM chat_messages WHERE session_id = $1 AND from_agent_id = $2"


async def wait_reply(
    hub: Hub, actor: Actor, session_id: str, *, wait: float, after_message_id: str | None = None
) -> dict[str, Any]:
    """Wait (again) for a reply in a conversation without sending anything:
    the resumable half of send-and-wait. A reply stored after
    ``after_message_id`` (default: the caller's last message) ends it at
    once, so a wait cut off by a reconnect or another instance misses
    nothing; otherwise it waits on the bus exactly like ``send``."""
    agent_id = actor.require_agent()
    clock.check_wait(wait, hub.settings.chat_max_wait_seconds)
    sid = parse_id(session_id, "session_id")
    after = parse_id(after_message_id, "after_message_id") if after_message_id else None
    listener = _Listener(hub, actor.project_id, agent_id)
    async with listener.listening():
        parts = await hub.store.fetch(_PARTICIPANTS, sid, actor.project_id)
        _member(parts, agent_id, sid)
        if after is not None:
            seq = await hub.store.fetchval(_MESSAGE_SEQ, after, sid)
            if seq is None:
                raise not_found(f"no message {after} in chat session {sid}", message_id=after)
        else:
            seq = await hub.store.fetchval(_MY_LAST_SEQ, sid, agent_id) or 0
        result: dict[str, Any] = {"session_id": sid, "participants": _participant_list(parts)}
        row = await hub.store.fetchrow(_REPLY_AFTER, sid, seq, agent_id)
        if row is not None:
            reply = _message_view(row, 0, agent_id)
            status = "target_left" if row["sender_leaving"] else "replied"
            return {**result, "status": status, "reply": reply, "events": [], "waited_seconds": 0}
        targets = {p["agent_id"]: p["alias"] for p in parts if p["agent_id"] != agent_id}
        deadline = _Deadline(hub, sid, agent_id, wait)
        await deadline.store()
        try:
            outcome = await _wait_for_reply(agent_id, result, listener, deadline, targets)
        finally:
            await deadline.clear()
    return {**result, **outcome}


async def _store(
    hub: Hub,
    actor: Actor,
    agent_id: str,
    body: str,
    to: list[str] | None,
    session_id: str | None,
    wait: float,
    hang_on: bool,
    leaving: bool,
) -> tuple[dict[str, Any], list[Mapping[str, Any]]]:
    """Store the message and its event: one statement into an existing
    conversation, else (a new one) the transaction that opens it."""
    waiting_until = clock.now() + timedelta(seconds=wait) if wait > 0 else None
    extends = HANG_ON_EXTENSION_SECONDS if hang_on else 0
    row = await hub.store.fetchrow(
        _SEND,
        session_id,
        actor.project_id,
        agent_id,
        actor.alias,
        body,
        leaving,
        hang_on,
        waiting_until,
        list(dict.fromkeys(to)) if session_id is None and to is not None else None,
        wait > 0,
        extends,
    )
    assert row is not None
    if row["message_id"] is None:
        if session_id is not None:
            raise _not_member(session_id)
        return await _store_opening(
            hub, actor, agent_id, body, to, wait, hang_on, leaving, waiting_until
        )
    # Committed (one statement in autocommit): now the others may hear of it.
    await events.publish_rows(hub, [row])
    parts: list[Mapping[str, Any]] = [
        {"agent_id": i, "alias": a, "left_at": left, "listening": listening}
        for i, a, left, listening in zip(
            row["part_ids"],
            row["part_aliases"],
            row["part_left_at"],
            row["part_listening"],
            strict=True,
        )
    ]
    sent = _sent(
        row["session_id"],
        row["message_id"],
        row["created_at"],
        extends,
        parts,
        waiting_until,
        agent_id,
    )
    return sent, parts


def _sent(
    session_id: str,
    message_id: str,
    created_at: datetime,
    extends: int,
    parts: Sequence[Mapping[str, Any]],
    waiting_until: datetime | None,
    sender_id: str,
) -> dict[str, Any]:
    # The sender hears of an extension only when someone's wait was
    # extended (as chat.read): bdh prints "X's wait extended" from it.
    waiting = any(p["listening"] and p["agent_id"] != sender_id for p in parts)
    return {
        "session_id": session_id,
        "message_id": message_id,
        "timestamp": iso(created_at),
        "delivered": True,
        "extends_wait_seconds": extends if waiting else 0,
        "participants": _participant_list(parts),
        "_waiting_until": waiting_until,
    }


async def _store_opening(
    hub: Hub,
    actor: Actor,
    agent_id: str,
    body: str,
    to: list[str] | None,
    wait: float,
    hang_on: bool,
    leaving: bool,
    waiting_until: datetime | None,
) -> tuple[dict[str, Any], list[Mapping[str, Any]]]:
    """The first message of a conversation opened by ``to`` (or the errors
    of a bad ``to``), in one transaction with the opening: the rare path."""
    assert to is not None
    extends = HANG_ON_EXTENSION_SECONDS if hang_on else 0
    async with events.change(hub, actor.project_id) as tx:
        session_id = await _open(hub, tx.conn, actor, agent_id, to)
        parts = await tx.conn.fetch(_PARTICIPANTS, session_id, actor.project_id)
        _member(parts, agent_id, session_id)
        row = await tx.conn.fetchrow(
            _INSERT_MESSAGE,
            session_id,
            actor.project_id,
            agent_id,
            actor.alias,
            body,
            leaving,
            hang_on,
            waiting_until,
        )
        assert row is not None
        data = {
            "session_id": session_id,
            "message_id": row["id"],
            "from_agent_id": agent_id,
            "from_alias": actor.alias,
            "body": body,
            "timestamp": iso(row["created_at"]),
            "sender_leaving": leaving,
            "sender_waiting": wait > 0,
            "hang_on": hang_on,
            "extends_wait_seconds": extends,
            "participants": [p["alias"] for p in parts],
        }
        tx.emit("chat.message", data, recipients=[p["agent_id"] for p in parts])
    sent = _sent(session_id, row["id"], row["created_at"], extends, parts, waiting_until, agent_id)
    return sent, parts


async def open_session(
    hub: Hub, actor: Actor, to_aliases: list[str], message: str, leaving: bool = False
) -> dict[str, Any]:
    """bdh's ``POST /v1/chat/sessions``: the conversation with these agents
    (reused when it exists) and a first message."""
    sent = await send(hub, actor, body=message, to=to_aliases, leaving=leaving)
    return {
        key: sent[key]
        for key in (
            "session_id",
            "message_id",
            "participants",
            "targets_connected",
            "targets_left",
            "timestamp",
        )
    }


# -- read receipts ------------------------------------------------------------------

_MESSAGE_SEQ = "SELECT seq FROM chat_messages WHERE id = $1 AND session_id = $2"
_LAST_MESSAGE = "SELECT id, seq FROM chat_messages WHERE session_id = $1 ORDER BY seq DESC LIMIT 1"

_MARK_READ = """
WITH old AS (
    SELECT last_read_seq FROM chat_participants
    WHERE session_id = $1 AND agent_id = $2 FOR UPDATE
)
UPDATE chat_participants p SET last_read_seq = greatest(p.last_read_seq, $3)
FROM old
WHERE p.session_id = $1 AND p.agent_id = $2
RETURNING old.last_read_seq AS before, p.last_read_seq AS after
"""

_COUNT_MARKED = """
SELECT count(*) FROM chat_messages
WHERE session_id = $1 AND seq > $2 AND seq <= $3 AND from_agent_id IS DISTINCT FROM $4
"""


async def mark_read(
    hub: Hub, actor: Actor, session_id: str, up_to_message_id: str | None = None
) -> dict[str, Any]:
    """Mark the conversation read up to a message (all of it without one)
    and tell the other participants (a ``chat.read`` receipt). A sender
    waiting for an answer waits ``READ_EXTENSION_SECONDS`` longer."""
    agent_id = await mail.mailbox(hub, actor)
    sid = parse_id(session_id, "session_id")
    up_to = parse_id(up_to_message_id, "up_to_message_id") if up_to_message_id else None
    async with events.change(hub, actor.project_id) as tx:
        parts = await tx.conn.fetch(_PARTICIPANTS, sid, actor.project_id)
        _member(parts, agent_id, sid)
        if up_to is not None:
            seq = await tx.conn.fetchval(_MESSAGE_SEQ, up_to, sid)
            if seq is None:
                raise not_found(f"no message {up_to} in chat session {sid}", message_id=up_to)
        else:
            last = await tx.conn.fetchrow(_LAST_MESSAGE, sid)
            up_to, seq = (last["id"], last["seq"]) if last else (None, 0)
        row = await tx.conn.fetchrow(_MARK_READ, sid, agent_id, seq)
        assert row is not None
        marked = 0
        if row["after"] > row["before"]:
            marked = await tx.conn.fetchval(
                _COUNT_MARKED, sid, row["before"], row["after"], agent_id
            )
        now = clock.now()
        someone_waits = any(
            p["agent_id"] != agent_id and p["waiting_until"] and p["waiting_until"] > now
            for p in parts
        )
        extends = READ_EXTENSION_SECONDS if someone_waits else 0
        tx.emit(
            "chat.read",
            {
                "session_id": sid,
                "reader_agent_id": agent_id,
                "reader_alias": actor.alias,
                "up_to_message_id": up_to,
                "messages_marked": marked,
                "extends_wait_seconds": extends,
                "timestamp": iso(now),
            },
            recipients=[p["agent_id"] for p in parts],
        )
    return {
        "success": True,
        "session_id": sid,
        "up_to_message_id": up_to,
        "messages_marked": marked,
        "extends_wait_seconds": extends,
        "wait_extended_seconds": extends,
    }


# -- reading ---------------------------------------------------------------------------

_HISTORY = f"""
SELECT {_MESSAGE_COLUMNS} FROM chat_messages
WHERE session_id = $1 AND project_id = $2
  AND (NOT $3 OR (seq > $4 AND from_agent_id IS DISTINCT FROM $5))
ORDER BY seq DESC
LIMIT $6
"""


async def history(
    hub: Hub, actor: Actor, session_id: str, *, limit: int = 100, unread_only: bool = False
) -> dict[str, Any]:
    """The conversation's last ``limit`` messages, oldest first. Reading
    history does not mark anything read (``mark_read`` does)."""
    agent_id = await mail.mailbox(hub, actor)
    sid = parse_id(session_id, "session_id")
    parts = await hub.store.fetch(_PARTICIPANTS, sid, actor.project_id)
    if actor.is_human and parts and not any(p["agent_id"] == agent_id for p in parts):
        # The dashboard's message centre reads every conversation.
        read_seq = 0
    else:
        read_seq = _member(parts, agent_id, sid)["last_read_seq"]
    rows = await hub.store.fetch(
        _HISTORY, sid, actor.project_id, unread_only, read_seq, agent_id, limit + 1
    )
    has_more = len(rows) > limit
    messages = [_message_view(r, read_seq, agent_id) for r in reversed(rows[:limit])]
    now = clock.now()
    return {
        "session_id": sid,
        "participants": _participant_list(parts),
        "messages": messages,
        "has_more": has_more,
        # Who blocks in send-and-wait here, on the others, until when.
        "waiting": [
            {"alias": p["alias"], "waiting_until": iso(p["waiting_until"])}
            for p in parts
            if p["waiting_until"] is not None and p["waiting_until"] > now
        ],
    }


_CONVERSATIONS = """
SELECT s.id AS session_id, s.created_at,
       (SELECT array_agg(a.alias ORDER BY a.alias)
        FROM chat_participants o JOIN agents a ON a.id = o.agent_id
        WHERE o.session_id = s.id) AS participants,
       last.body AS last_message, last.from_alias AS last_from,
       last.created_at AS last_activity,
       (SELECT count(*) FROM chat_messages m
        WHERE m.session_id = s.id AND m.seq > me.last_read_seq
          AND m.from_agent_id IS DISTINCT FROM me.agent_id) AS unread_count,
       w.waiting_until, w.waiting_aliases
FROM chat_participants me
JOIN chat_sessions s ON s.id = me.session_id
LEFT JOIN LATERAL (
    SELECT body, from_alias, created_at FROM chat_messages m
    WHERE m.session_id = s.id ORDER BY m.seq DESC LIMIT 1
) last ON true
LEFT JOIN LATERAL (
    SELECT max(o.waiting_until) AS waiting_until,
           array_agg(a.alias ORDER BY a.alias) AS waiting_aliases
    FROM chat_participants o JOIN agents a ON a.id = o.agent_id
    WHERE o.session_id = s.id AND o.agent_id <> me.agent_id AND o.waiting_until > now()
) w ON true
WHERE me.agent_id = $2 AND me.project_id = $1
  AND (NOT $4 OR EXISTS (
      SELECT 1 FROM chat_messages m
      WHERE m.session_id = s.id AND m.seq > me.last_read_seq
        AND m.from_agent_id IS DISTINCT FROM me.agent_id))
ORDER BY last.created_at DESC NULLS LAST, s.created_at DESC
LIMIT $3
"""


def _conversation(row: Any) -> dict[str, Any]:
    waiting_until = row["waiting_until"]
    remaining = None
    if waiting_until is not None:
        remaining = max(0, math.ceil((waiting_until - clock.now()).total_seconds()))
    return {
        "session_id": row["session_id"],
        "participants": list(row["participants"] or []),
        "created_at": iso(row["created_at"]),
        "last_message": row["last_message"] or "",
        "last_from": row["last_from"] or "",
        "last_activity": iso(row["last_activity"]) or "",
        "unread_count": int(row["unread_count"]),
        "sender_waiting": waiting_until is not None,
        "waiting": list(row["waiting_aliases"] or []),
        "time_remaining_seconds": remaining,
    }


async def pending(hub: Hub, actor: Actor) -> dict[str, Any]:
    """Conversations with messages the caller has not read, and whether
    someone there is waiting for the caller's answer (and how long)."""
    agent_id = await mail.mailbox(hub, actor)
    rows = await hub.store.fetch(_CONVERSATIONS, actor.project_id, agent_id, 1000, True)
    items = [_conversation(r) for r in rows]
    return {
        "pending": items,
        "unread_messages": sum(i["unread_count"] for i in items),
        # bdh shows unread mail here, next to the chats.
        "messages_waiting": await mail.unread_count(hub, actor.project_id, agent_id),
    }


async def list_sessions(hub: Hub, actor: Actor, limit: int = 100) -> dict[str, Any]:
    """The caller's conversations, most recently active first."""
    agent_id = await mail.mailbox(hub, actor)
    rows = await hub.store.fetch(_CONVERSATIONS, actor.project_id, agent_id, limit, False)
    return {"sessions": [_conversation(r) for r in rows]}


# -- bdh's stream -------------------------------------------------------------------------

_REPLAY = f"""
SELECT {_MESSAGE_COLUMNS} FROM chat_messages
WHERE session_id = $1
  AND seq >= coalesce(
      CASE WHEN $2::timestamptz IS NOT NULL
           THEN (SELECT min(seq) FROM chat_messages
                 WHERE session_id = $1 AND created_at > $2)
           ELSE (SELECT max(seq) FROM chat_messages
                 WHERE session_id = $1 AND from_agent_id = $3
                   AND created_at > now() - make_interval(secs => $4))
      END,
      9223372036854775807)
ORDER BY seq
LIMIT 200
"""


async def open_stream(
    hub: Hub,
    actor: Actor,
    session_id: str,
    deadline: datetime,
    after: datetime | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """bdh's send-and-wait stream: ``message`` and ``read_receipt`` events
    (bdh Event fields) of one conversation until ``deadline``, which read
    receipts and hang-ons from the others push back.

    The checks (NOT_FOUND, a deadline in the past) run here, before a
    transport starts its response; the returned generator then yields the
    events. It first replays the messages after ``after``, or else the
    caller's own last message (if recent) and what followed it: bdh posts
    its message, then opens the stream, and skips events until it sees its
    own message. ``aclose()`` it when the client goes away.
    """
    agent_id = actor.require_agent()
    sid = parse_id(session_id, "session_id")
    parts = await hub.store.fetch(_PARTICIPANTS, sid, actor.project_id)
    _member(parts, agent_id, sid)
    seconds = (deadline - clock.now()).total_seconds()
    if seconds <= 0:
        raise invalid_params("deadline must be in the future")
    seconds = min(seconds, hub.settings.chat_max_wait_seconds)
    return _stream_events(hub, actor.project_id, agent_id, sid, seconds, after)


async def stream(
    hub: Hub,
    actor: Actor,
    session_id: str,
    deadline: datetime,
    after: datetime | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """:func:`open_stream` as one async generator (its errors surface on
    the first iteration)."""
    events_ = await open_stream(hub, actor, session_id, deadline, after)
    try:
        async for event in events_:
            yield event
    finally:
        await events_.aclose()


async def _stream_events(
    hub: Hub,
    project_id: str,
    agent_id: str,
    sid: str,
    seconds: float,
    after: datetime | None,
) -> AsyncGenerator[dict[str, Any], None]:
    listener = _Listener(hub, project_id, agent_id)
    async with listener.listening():
        waiting = _Deadline(hub, sid, agent_id, seconds)
        await waiting.store()
        try:
            rows = await hub.store.fetch(
                _REPLAY, sid, after, agent_id, float(STREAM_REPLAY_SECONDS)
            )
            yielded: set[str] = set()
            for row in rows:
                yielded.add(row["id"])
                view = _message_view(row, 0, agent_id)
                yield {
                    "type": "message",
                    "session_id": sid,
                    **{k: view[k] for k in _STREAM_MESSAGE_FIELDS},
                    "extends_wait_seconds": HANG_ON_EXTENSION_SECONDS if row["hang_on"] else 0,
                }
            while waiting.remaining() > 0:
                for message in await listener.take():
                    data = message["data"]
                    if message["type"] == "presence" or data.get("session_id") != sid:
                        continue
                    if message["type"] == "chat.message":
                        if data["message_id"] in yielded:
                            continue
                        yielded.add(data["message_id"])
                        if data["from_agent_id"] != agent_id and data["hang_on"]:
                            await waiting.extend(data["extends_wait_seconds"])
                    elif data.get("reader_agent_id") == agent_id:
                        continue
                    else:
                        await waiting.extend(data["extends_wait_seconds"])
                    yield _bdh_event(message)
                await listener.sleep(waiting.remaining())
        finally:
            await waiting.clear()


_STREAM_MESSAGE_FIELDS = (
    "message_id",
    "from_agent",
    "from_agent_id",
    "body",
    "timestamp",
    "sender_leaving",
    "hang_on",
)
