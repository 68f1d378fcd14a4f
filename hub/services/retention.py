"""Retention: the event log is pruned; mail and chat only if asked.

Events older than ``event_retention_days`` are deleted by a background task
on every instance, of which one at a time does the work (a session advisory
lock on its own connection; the others skip that round). It deletes in
batches of consecutive ``seq`` (the primary key), one short autocommit
statement each, so writers never wait on it: new events are inserted far
above the range being deleted, and no statement holds a lock a writer needs.

Each batch also moves the project's *horizon* (``event_horizons``): the
newest event of that project deleted so far. A resume from a cursor below
it would miss events, so the session answers with a ``resync`` event and
``events.since`` with CURSOR_EXPIRED (docs/protocol.md) instead.

Mail and chat are the team's record, not a replay log: they are kept
unless ``message_retention_days`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

import asyncpg

from hub import metrics
from hub.services.context import Hub

logger = logging.getLogger("beadhub.retention")

#: Arbitrary constant: the advisory lock key of the pruner.
RETENTION_LOCK_KEY = 0x42EAD_52
#: seq values per delete statement.
EVENT_BATCH = 5000
#: Rows per mail or chat delete statement.
MESSAGE_BATCH = 1000

_PRUNE_EVENTS = """
WITH gone AS (
    DELETE FROM events
    WHERE seq >= $1 AND seq < $2 AND created_at < $3
    RETURNING project_id, seq
), horizon AS (
    INSERT INTO event_horizons AS h (project_id, pruned_through)
    SELECT g.project_id, max(g.seq) FROM gone g
    JOIN projects p ON p.id = g.project_id
    GROUP BY g.project_id
    ON CONFLICT (project_id) DO UPDATE
    SET pruned_through = greatest(h.pruned_through, excluded.pruned_through), pruned_at = now()
)
SELECT (SELECT count(*) FROM gone) AS deleted,
       EXISTS (
           SELECT 1 FROM events WHERE seq >= $1 AND seq < $2 AND created_at >= $3
       ) AS reached_window
"""

_PRUNE_MAIL = """
WITH doomed AS (
    SELECT id FROM mail_messages WHERE created_at < $1 LIMIT $2
), deliveries AS (
    DELETE FROM mail_deliveries WHERE message_id IN (SELECT id FROM doomed)
)
DELETE FROM mail_messages WHERE id IN (SELECT id FROM doomed)
"""

_PRUNE_CHAT = """
DELETE FROM chat_messages
WHERE id IN (SELECT id FROM chat_messages WHERE created_at < $1 LIMIT $2)
"""


def _cutoff(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


async def prune_events(conn: asyncpg.Connection, before: datetime) -> int:
    """Delete events stored before ``before``, oldest first, in batches."""
    deleted = 0
    low = await conn.fetchval("SELECT min(seq) FROM events")
    while low is not None:
        row = await conn.fetchrow(_PRUNE_EVENTS, low, low + EVENT_BATCH, before)
        assert row is not None
        deleted += row["deleted"]
        metrics.EVENTS_PRUNED.inc(row["deleted"])
        if row["reached_window"]:
            break
        low = await conn.fetchval("SELECT min(seq) FROM events WHERE seq >= $1", low + EVENT_BATCH)
        await asyncio.sleep(0)
    return deleted


async def _prune_batched(conn: asyncpg.Connection, statement: str, before: datetime) -> int:
    deleted = 0
    while True:
        status = await conn.execute(statement, before, MESSAGE_BATCH)
        count = int(status.rsplit(" ", 1)[-1])
        deleted += count
        if count < MESSAGE_BATCH:
            return deleted
        await asyncio.sleep(0)


async def prune(hub: Hub) -> dict[str, int] | None:
    """One round of retention; None when another instance is pruning."""
    settings = hub.settings
    if settings.event_retention_days <= 0 and settings.message_retention_days <= 0:
        return {"events": 0, "mail": 0, "chat": 0}
    conn = await asyncpg.connect(hub.store.dsn, timeout=10)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_KEY):
            return None
        done = {"events": 0, "mail": 0, "chat": 0}
        if settings.event_retention_days > 0:
            done["events"] = await prune_events(conn, _cutoff(settings.event_retention_days))
        if settings.message_retention_days > 0:
            before = _cutoff(settings.message_retention_days)
            done["mail"] = await _prune_batched(conn, _PRUNE_MAIL, before)
            done["chat"] = await _prune_batched(conn, _PRUNE_CHAT, before)
        return done
    finally:
        # Closing the connection also releases the lock.
        await conn.close()


async def horizon(hub: Hub, project_id: str) -> int:
    """The newest pruned event's cursor in this project (0: none pruned)."""
    value = await hub.store.fetchval(
        "SELECT pruned_through FROM event_horizons WHERE project_id = $1", project_id
    )
    return int(value or 0)


async def _run(hub: Hub) -> None:
    while True:
        await asyncio.sleep(hub.settings.prune_interval_seconds)
        try:
            done = await prune(hub)
        except Exception as exc:
            logger.warning("retention round failed (%s); trying again later", exc)
            continue
        if done and any(done.values()):
            logger.info(
                "retention pruned %d events, %d mail messages, %d chat messages",
                done["events"],
                done["mail"],
                done["chat"],
            )


_tasks: dict[int, asyncio.Task[None]] = {}


def start(hub: Hub) -> None:
    if hub.settings.event_retention_days > 0 or hub.settings.message_retention_days > 0:
        _tasks[id(hub)] = asyncio.create_task(_run(hub))


async def stop(hub: Hub) -> None:
    task = _tasks.pop(id(hub), None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
