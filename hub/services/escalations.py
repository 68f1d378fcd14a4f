"""Escalations: an agent that cannot resolve something asks a human.

An escalation is pending until a human (a dashboard ticket) or the project's
coordinator answers it, or until it expires. The status is derived from
``responded_at`` and ``expires_at`` when read, so an expired escalation is
expired at once everywhere. Its expiry is also *announced*
(``escalation.expired``, once): by a timer on the instance that created it
and, for instances that died, by a sweep on any instance
(:class:`Expiry`); ``expiry_announced_at`` makes the announcement a
conditional UPDATE that only one of them wins. Answering is one conditional
UPDATE: of two concurrent answers exactly one wins, and an expired
escalation can no longer be answered.

Both ``escalation.created`` and ``escalation.answered`` go to the whole
project, so every dashboard sees the queue change; the escalating agent
finds its answer in ``escalation.answered`` (or with :func:`get`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import asyncpg

from hub.services import background, clock, events, policies, webhooks
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from hub.services.events import change
from protocol.errors import conflict, forbidden, invalid_params, not_found
from protocol.methods.escalations import (
    BEAD_ID_MAX,
    DEFAULT_EXPIRES_IN_SECONDS,
    MAX_EXPIRES_IN_SECONDS,
    RESPONSE_MAX,
    SITUATION_MAX,
    SUBJECT_MAX,
)

logger = logging.getLogger("beadhub.escalations")

STATUSES = ("pending", "answered", "expired")
#: The safety-net sweep's period (a timer announces the usual case).
SWEEP_INTERVAL_SECONDS = 10.0
#: Only one instance sweeps at a time (a session advisory lock on this key).
SWEEP_LOCK = "beadhub:escalation-sweep"

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
    expiry = _machines.get(id(hub))
    if expiry is not None:
        expiry.schedule(actor.project_id, escalation["escalation_id"], float(ttl))
    await webhooks.notify(hub, actor.project_id, "escalation.created", escalation)
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
    """Answer a pending escalation (humans, and coordinators a human
    granted the role, never on their own escalation); announce
    ``escalation.answered`` to the project. Answering twice, or after the
    escalation expired, is a CONFLICT."""
    escalation_id = _escalation_id(escalation_id)
    response = _text("response", response, RESPONSE_MAX)
    responded_by = (actor.human_name or actor.alias) if actor.is_human else actor.alias
    async with change(hub, actor.project_id) as tx:
        await policies.require_coordinator_or_human(tx.conn, actor, "answer escalations")
        if actor.agent_id is not None:
            asker = await tx.conn.fetchval(
                "SELECT agent_id FROM escalations WHERE id = $1 AND project_id = $2",
                escalation_id,
                actor.project_id,
            )
            if asker == actor.agent_id:
                raise forbidden("an agent may not answer its own escalation", needs="human")
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


# -- expiry announcements ----------------------------------------------------------

_ANNOUNCE = f"""
UPDATE escalations AS e SET expiry_announced_at = now()
WHERE e.project_id = $1 AND ($2::uuid IS NULL OR e.id = $2)
  AND e.responded_at IS NULL AND e.expires_at <= now() AND e.expiry_announced_at IS NULL
RETURNING {_COLUMNS}
"""


async def announce_expired(hub: Hub, project_id: str, escalation_id: str | None = None) -> int:
    """Announce ``escalation.expired`` for the project's escalations (or
    one) that expired unanswered and were not announced yet; how many."""
    async with change(hub, project_id) as tx:
        rows = await tx.conn.fetch(_ANNOUNCE, project_id, escalation_id)
        expired = [view(r) for r in rows]
        for escalation in expired:
            tx.emit("escalation.expired", _event_data(escalation))
    for escalation in expired:
        await webhooks.notify(hub, project_id, "escalation.expired", escalation)
    return len(expired)


async def sweep(hub: Hub) -> int:
    """Announce every due expiry of every project; skipped while another
    instance sweeps."""
    count = 0
    async with hub.store.connection() as conn:
        if not await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", SWEEP_LOCK
        ):
            return 0
        try:
            projects = await conn.fetch(
                "SELECT DISTINCT project_id FROM escalations WHERE expires_at <= now() "
                "AND responded_at IS NULL AND expiry_announced_at IS NULL"
            )
            for row in projects:
                count += await announce_expired(hub, row["project_id"])
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", SWEEP_LOCK)
    return count


class Expiry:
    """One hub's expiry timers (for the escalations it created) and its
    sweep. Nothing polls per request: one timer per pending escalation,
    one sweep every SWEEP_INTERVAL_SECONDS."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="escalation-sweep")

    def schedule(self, project_id: str, escalation_id: str, seconds: float) -> None:
        # A little after the instant, so now() in the UPDATE is past it.
        self._timers[escalation_id] = background.later(
            seconds + 0.05, self._fire, project_id, escalation_id
        )

    def _fire(self, project_id: str, escalation_id: str) -> None:
        self._timers.pop(escalation_id, None)
        background.spawn(self._announce(project_id, escalation_id), self._tasks)

    async def _announce(self, project_id: str, escalation_id: str) -> None:
        try:
            await announce_expired(self.hub, project_id, escalation_id)
        except Exception as exc:  # the sweep announces what a failed timer left
            logger.warning("announcing expiry of escalation %s failed: %s", escalation_id, exc)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            try:
                await sweep(self.hub)
            except Exception as exc:
                logger.warning("escalation sweep failed: %s", exc)

    async def stop(self) -> None:
        timers, self._timers = self._timers, {}
        await background.stop(timers.values(), [*self._tasks, self._sweeper])


_machines: dict[int, Expiry] = {}


def start(hub: Hub) -> Expiry:
    """Start this hub's expiry timers and sweep (app lifespan start-up)."""
    expiry = _machines.get(id(hub))
    if expiry is None:
        expiry = _machines[id(hub)] = Expiry(hub)
    return expiry


async def stop(hub: Hub) -> None:
    expiry = _machines.pop(id(hub), None)
    if expiry is not None:
        await expiry.stop()


async def wait_answer(hub: Hub, actor: Actor, escalation_id: str, wait: float) -> dict[str, Any]:
    """The escalation once it is answered (or expired), waiting at most
    ``wait`` seconds. Woken by ``escalation.answered`` (or ``.expired``) on the bus (any
    instance), never by polling; the store is read at the start, on that
    event and after a bus gap, so a wait resumed elsewhere misses nothing."""
    escalation_id = _escalation_id(escalation_id)
    clock.check_wait(wait, hub.settings.chat_max_wait_seconds)
    woken = asyncio.Event()

    def on_event(message: dict[str, Any]) -> None:
        data = message.get("data") or {}
        if message.get("type") in ("escalation.answered", "escalation.expired") and (
            data.get("escalation_id") == escalation_id
        ):
            woken.set()

    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + wait
    channel = events.channel(actor.project_id)
    async with hub.relay.listening(channel, on_event, on_gap=lambda _s: woken.set()):
        while True:
            escalation = await get(hub, actor, escalation_id)
            remaining = deadline - loop.time()
            if escalation["status"] != "pending" or remaining <= 0:
                break
            woken.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await woken.wait()
    return {**escalation, "waited_seconds": round(loop.time() - started, 3)}
