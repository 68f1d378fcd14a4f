"""The per-project event log, and how a change announces itself.

A state change and the event announcing it are written in one transaction
(:func:`change`); only after the commit is the event published on the bus.
So an event a client sees is always backed by committed state, and a client
that missed events reads them back with :func:`since`.

A change that is one statement can write its event in that same statement
and skip the transaction (BEGIN, statement, event insert, COMMIT become one
round trip): the service adds a data-modifying CTE built with
:func:`insert_cte`, selects its columns with :func:`returned`, runs the
statement in autocommit (``hub.store.fetchrow``) and then calls
:func:`publish_rows`. Durable first, then notify still holds: a single
statement in autocommit is atomic (every CTE or none) and committed when it
returns, and only then is the event published. Payloads are built in SQL
(``jsonb_build_object``, timestamps with :func:`iso_sql`); what is published
is the stored row as returned, so the bus and a replay carry the same event.
Make the event's INSERT conditional (``... FROM <the change's CTE>``) so a
refused change stores no event; a row without an event is not published.

Cursors are ``events.seq``. Sequence values are taken at insert time, not
at commit, so a transaction that started earlier may commit a smaller seq
after a larger one was already delivered. :func:`since` therefore also
returns events up to ``LATE_COMMIT_WINDOW_SECONDS`` older than the
cursor's own; clients drop the ones they saw by event id. The window only
has to cover the time between an event's insert and its commit: events are
inserted as the last statements of their transaction, or in the one
statement that commits right after, so that is one commit (milliseconds),
far shorter than the window.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from hub import metrics
from hub.services.clock import iso
from hub.services.context import Hub
from protocol.errors import ErrorCode, RpcError

logger = logging.getLogger("beadhub.events")

LATE_COMMIT_WINDOW_SECONDS = 2
REPLAY_LIMIT = 1000


def channel(project_id: str) -> str:
    return f"project:{project_id}"


@dataclass(slots=True)
class Event:
    seq: int
    id: str
    project_id: str
    type: str
    data: dict[str, Any]
    recipients: list[str] | None
    at: str

    def visible_to(self, agent_id: str | None) -> bool:
        """Humans on the dashboard see the project's whole feed."""
        return self.recipients is None or agent_id is None or agent_id in self.recipients

    def wire(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "id": self.id,
            "cursor": str(self.seq),
            "project_id": self.project_id,
            "at": self.at,
            "data": self.data,
        }

    def bus_message(self) -> dict[str, Any]:
        message = self.wire()
        message["recipients"] = self.recipients
        return message

    @classmethod
    def from_bus(cls, message: dict[str, Any]) -> Event:
        return cls(
            seq=int(message["cursor"]),
            id=message["id"],
            project_id=message["project_id"],
            type=message["type"],
            data=message["data"],
            recipients=message.get("recipients"),
            at=message["at"],
        )

    @classmethod
    def from_row(cls, row: asyncpg.Record, prefix: str = "") -> Event:
        """An event from its stored columns, named ``<prefix><column>``
        (``ev_seq``, ... as :func:`returned` names them)."""
        return cls(
            seq=row[prefix + "seq"],
            id=row[prefix + "id"],
            project_id=row[prefix + "project_id"],
            type=row[prefix + "type"],
            data=row[prefix + "payload"],
            recipients=row[prefix + "recipients"],
            at=iso(row[prefix + "created_at"]) or "",
        )


@dataclass(slots=True)
class Change:
    """An open transaction plus the events it will announce."""

    conn: asyncpg.Connection
    project_id: str
    _pending: list[tuple[str, dict[str, Any], list[str] | None]] = field(default_factory=list)

    def emit(self, type: str, data: dict[str, Any], recipients: list[str] | None = None) -> None:
        self._pending.append((type, data, recipients))


EVENT_COLUMNS = ("seq", "id", "project_id", "type", "recipients", "payload", "created_at")

_INSERT = f"""
INSERT INTO events (project_id, type, recipients, payload)
VALUES ($1, $2, $3::uuid[], $4)
RETURNING {", ".join(EVENT_COLUMNS)}
"""


@asynccontextmanager
async def change(hub: Hub, project_id: str) -> AsyncIterator[Change]:
    """``async with change(hub, pid) as tx``: write with ``tx.conn``,
    announce with ``tx.emit``; events are stored before the commit and
    published after it. An exception rolls back both."""
    async with hub.store.connection() as conn:
        tx = Change(conn, project_id)
        async with conn.transaction():
            yield tx
            stored = [
                Event.from_row(await conn.fetchrow(_INSERT, tx.project_id, type, recipients, data))
                for type, data, recipients in tx._pending
            ]
    for event in stored:
        await publish(hub, event)


async def store(
    conn: asyncpg.Connection,
    project_id: str,
    type: str,
    data: dict[str, Any],
    recipients: list[str] | None = None,
) -> Event:
    """Insert an event in the caller's own open transaction; the caller
    publishes it (:func:`publish`) once that transaction committed."""
    return Event.from_row(await conn.fetchrow(_INSERT, project_id, type, recipients, data))


#: Events held back until an enclosing transaction commits (:func:`deferring`).
_deferred: ContextVar[list[Event] | None] = ContextVar("beadhub_deferred_events", default=None)


@contextmanager
def deferring() -> Iterator[list[Event]]:
    """Inside this block, :func:`publish` and :func:`publish_rows` only
    collect: the block runs the change inside a transaction of its own
    (hub.services.idempotency), so "committed" means that transaction's
    commit. Publish the list with :func:`flush` after it."""
    held: list[Event] = []
    token = _deferred.set(held)
    try:
        yield held
    finally:
        _deferred.reset(token)


async def flush(hub: Hub, held: list[Event]) -> None:
    for event in held:
        await publish(hub, event)


async def publish(hub: Hub, event: Event) -> None:
    """Announce a committed event, unless nobody could receive it
    (Relay.wanted)."""
    held = _deferred.get()
    if held is not None:
        held.append(event)
        return
    metrics.EVENTS_PUBLISHED.value += 1
    name = channel(event.project_id)
    if hub.relay.wanted(name, event.type, event.recipients):
        await hub.relay.publish(name, event.bus_message())


# -- one-statement changes (see the module doc) -------------------------------


def insert_cte(select: str) -> str:
    """The body of a CTE that stores an event: ``select`` yields
    ``(project_id, type, recipients, payload)``, e.g.
    ``SELECT $2, 'mail', array(...), jsonb_build_object(...) FROM m`` (no
    row from ``m``, no event). Use it as ``ev AS (...)``."""
    return (
        "INSERT INTO events (project_id, type, recipients, payload)\n"
        f"{select}\nRETURNING {', '.join(EVENT_COLUMNS)}"
    )


def returned(cte: str = "ev", prefix: str = "ev_") -> str:
    """A select list of the event CTE's columns as ``ev_seq, ev_id, ...``
    (``FROM ... LEFT JOIN ev ON true`` keeps the row when there is none)."""
    return ", ".join(f"{cte}.{c} AS {prefix}{c}" for c in EVENT_COLUMNS)


def iso_sql(expr: str) -> str:
    """SQL rendering the timestamptz ``expr`` exactly as :func:`clock.iso`
    does (RFC 3339 in UTC with ``Z``; microseconds only when non-zero, as
    Python's ``isoformat``): the database function ``wire_time``
    (migration 0006), which PostgreSQL inlines."""
    return f"wire_time({expr})"


async def publish_rows(
    hub: Hub, rows: list[asyncpg.Record] | tuple[asyncpg.Record, ...], prefix: str = "ev_"
) -> None:
    """Publish the events a committed statement returned (rows whose event
    columns are NULL stored no event and are skipped)."""
    held = _deferred.get()
    if held is not None:
        held.extend(Event.from_row(row, prefix) for row in rows if row[prefix + "seq"] is not None)
        return
    for row in rows:
        if row[prefix + "seq"] is None:
            continue
        metrics.EVENTS_PUBLISHED.value += 1
        # As publish(), but an event nobody could receive is not even built.
        name = channel(row[prefix + "project_id"])
        if hub.relay.wanted(name, row[prefix + "type"], row[prefix + "recipients"]):
            await hub.relay.publish(name, Event.from_row(row, prefix).bus_message())


async def record(
    hub: Hub,
    project_id: str,
    type: str,
    data: dict[str, Any],
    recipients: list[str] | None = None,
) -> None:
    """Store and publish an event that has no other state change with it."""
    async with change(hub, project_id) as tx:
        tx.emit(type, data, recipients)


_SINCE = """
SELECT seq, id, project_id, type, recipients, payload, created_at
FROM events
WHERE project_id = $1
  AND ($3::uuid IS NULL OR recipients IS NULL OR $3::uuid = ANY(recipients))
  AND (
    seq > $2
    OR created_at >= (
      SELECT created_at - make_interval(secs => $4)
      FROM events WHERE seq = $2 AND project_id = $1
    )
  )
ORDER BY seq
LIMIT $5
"""


async def since(
    hub: Hub, project_id: str, agent_id: str | None, cursor: int, limit: int = REPLAY_LIMIT
) -> list[Event]:
    """Events after ``cursor`` visible to the agent (all of them for a
    human), plus late committers near the cursor (see the module doc)."""
    rows = await hub.store.fetch(
        _SINCE, project_id, cursor, agent_id, float(LATE_COMMIT_WINDOW_SECONDS), limit
    )
    return [Event.from_row(row) for row in rows]


async def cursor_before(hub: Hub, project_id: str, seconds: float) -> int:
    """The cursor of the project's last event stored more than ``seconds``
    ago: replaying from it returns everything stored since. (A backward
    scan of the (project_id, seq) index that stops at the first such event.)"""
    value = await hub.store.fetchval(
        "SELECT seq FROM events "
        "WHERE project_id = $1 AND created_at < now() - make_interval(secs => $2) "
        "ORDER BY seq DESC LIMIT 1",
        project_id,
        float(seconds),
    )
    return int(value or 0)


async def latest_cursor(hub: Hub, project_id: str) -> int:
    value = await hub.store.fetchval(
        "SELECT coalesce(max(seq), 0) FROM events WHERE project_id = $1", project_id
    )
    return int(value)


async def resync_needed(hub: Hub, project_id: str, cursor: int) -> dict[str, Any] | None:
    """What a client resuming from ``cursor`` must be told when retention
    pruned events after it (None: nothing it could miss was pruned)."""
    from hub.services.retention import horizon

    pruned_through = await horizon(hub, project_id)
    if cursor >= pruned_through:
        return None
    metrics.RESYNCS.inc()
    return {
        "reason": "events after this cursor were pruned by retention; re-read state",
        "requested_cursor": str(cursor),
        "pruned_through": str(pruned_through),
        "cursor": str(await latest_cursor(hub, project_id)),
        "retention_days": hub.settings.event_retention_days,
    }


async def require_resumable(hub: Hub, project_id: str, cursor: int) -> None:
    """CURSOR_EXPIRED when events after ``cursor`` were pruned."""
    resync = await resync_needed(hub, project_id, cursor)
    if resync is not None:
        raise RpcError(
            ErrorCode.CURSOR_EXPIRED,
            f"cursor {cursor} is older than the retention window: re-read state, "
            f"then continue from cursor {resync['cursor']}",
            resync,
        )


def resync_event(project_id: str, resync: dict[str, Any]) -> dict[str, Any]:
    """The ``resync`` event a session sends instead of a replay it cannot
    complete; its ``cursor`` is where the client continues from."""
    return {
        "type": "resync",
        "id": str(uuid.uuid4()),
        "cursor": resync["cursor"],
        "project_id": project_id,
        "at": iso(datetime.now(UTC)) or "",
        "data": resync,
    }
