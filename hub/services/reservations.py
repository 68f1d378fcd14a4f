"""File reservations: short-lived advisory locks on repo paths and globs.

Reservations are advisory: a conflict informs the caller (who holds it,
until when, when to retry); it does not stop an edit. An agent reserves a
list of paths or globs (see :mod:`hub.services.paths` for the syntax and
the overlap rules), exclusive (the default) or shared. Shared never
conflicts with shared; anything conflicts with another holder's exclusive
reservation, and an exclusive request with another holder's shared one. A
conflicting path is not granted; the others in the same request are. The
same holder reserving the same pattern again renews it.

Deciding across instances. Each request runs in one transaction that first
takes transaction-scoped advisory locks (``reservation_locks`` in the
migration): shared on every ancestor directory of each pattern, exclusive
on the pattern's own key (its file, or a glob's literal directory), all in
one global order. Two requests that could overlap always collide on some
key, so they run one after the other; requests on unrelated paths take no
common exclusive key and run in parallel. Under READ COMMITTED each later
statement sees what the previous lock holder committed, so the conflict
check and the INSERT that follow (one statement) decide correctly.

Expiry. A row is live while ``expires_at > now()``; every query filters on
that, so an expired reservation disappears from listings and stops
conflicting the instant it expires, with no cleanup having run. The row
itself is deleted, and ``reservation.expired`` announced, by an asyncio
timer on the instance that granted or renewed it (one atomic ``DELETE ...
WHERE expires_at <= now() RETURNING``: only one deleter emits). A sweep
every ``SWEEP_INTERVAL_SECONDS`` (and at start-up) does the same for rows
whose instance died. :func:`start` and :func:`stop` run that machinery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from hub.services import clock, policies
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from hub.services.events import change
from hub.services.paths import Pattern, normalise_prefix, parse
from protocol.errors import invalid_params
from protocol.methods.reservations import (
    BEAD_ID_MAX,
    MAX_PATHS,
    METADATA_MAX_BYTES,
    REASON_MAX,
)

logger = logging.getLogger("beadhub.reservations")

SWEEP_INTERVAL_SECONDS = 30.0
#: Only one instance sweeps at a time (a session advisory lock on this key).
SWEEP_LOCK = "beadhub:reservation-sweep"
SWEEP_BATCH = 500
#: Timers fire this long after expires_at, so the database agrees it passed.
EXPIRY_GRACE_SECONDS = 0.05
#: Least wait before re-checking a row that was not yet expired when its
#: timer fired (clock skew between hub and database).
RECHECK_SECONDS = 0.25

_COLUMNS = """
r.id, r.project_id, r.holder_agent_id, r.holder_alias, r.path, r.is_glob, r.exclusive,
r.reason, r.bead_id, r.metadata, r.acquired_at, r.expires_at
"""


# -- views --------------------------------------------------------------------


def view(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """A reservation as listed: the fields of bdh's LockInfo and aw's
    ReservationView."""
    return {
        "reservation_id": row["id"],
        "project_id": row["project_id"],
        "path": row["path"],
        "resource_key": row["path"],
        "is_glob": row["is_glob"],
        "holder_alias": row["holder_alias"],
        "holder_agent_id": row["holder_agent_id"],
        "workspace_id": row["holder_agent_id"],
        "exclusive": row["exclusive"],
        "reason": row["reason"],
        "bead_id": row["bead_id"],
        "metadata": row["metadata"],
        "acquired_at": iso(row["acquired_at"]),
        "expires_at": iso(row["expires_at"]),
        "ttl_remaining_seconds": row["ttl_remaining"],
    }


def _event_data(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    return {
        "reservation_id": row["id"],
        "path": row["path"],
        "holder_alias": row["holder_alias"],
        "holder_agent_id": row["holder_agent_id"],
        "workspace_id": row["holder_agent_id"],
        "exclusive": row["exclusive"],
        "reason": row["reason"],
        "bead_id": row["bead_id"],
        "acquired_at": iso(row["acquired_at"]),
        "expires_at": iso(row["expires_at"]),
    }


def _seconds_until(moment: datetime, at: datetime) -> int:
    return max(1, math.ceil((moment - at).total_seconds()))


def _conflict(row: asyncpg.Record, at: datetime) -> dict[str, Any]:
    """bdh's ConflictLock, plus the holder's own pattern (``held_path``)
    when it differs from the requested ``path`` (a glob)."""
    return {
        "path": row["requested"],
        "held_path": row["path"],
        "reservation_id": row["id"],
        "held_by": row["holder_alias"],
        "holder_alias": row["holder_alias"],
        "holder_agent_id": row["holder_agent_id"],
        "workspace_id": row["holder_agent_id"],
        "bead_id": row["bead_id"],
        "reason": row["reason"],
        "exclusive": row["exclusive"],
        "acquired_at": iso(row["acquired_at"]),
        "expires_at": iso(row["expires_at"]),
        "retry_after_seconds": _seconds_until(row["expires_at"], at),
    }


# -- input ----------------------------------------------------------------------
# The HTTP shim and the dashboard call these functions too, so they check
# what the JSON-RPC params models already check.


def _patterns(paths: Sequence[str]) -> list[Pattern]:
    """Parse every path before anything is written; drop duplicates."""
    if isinstance(paths, str) or not isinstance(paths, list | tuple):
        raise invalid_params("paths must be a list of repo-relative paths")
    if not 1 <= len(paths) <= MAX_PATHS:
        raise invalid_params(f"give between 1 and {MAX_PATHS} paths", count=len(paths))
    unique: dict[str, Pattern] = {}
    for raw in paths:
        pattern = parse(raw)
        unique.setdefault(pattern.path, pattern)
    return list(unique.values())


def _ttl(hub: Hub, ttl_seconds: int | None) -> int:
    if ttl_seconds is None:
        return hub.settings.reservation_default_ttl
    limit = hub.settings.reservation_max_ttl
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
        raise invalid_params("ttl_seconds must be an integer", ttl_seconds=ttl_seconds)
    if not 1 <= ttl_seconds <= limit:
        raise invalid_params(
            f"ttl_seconds must be between 1 and {limit}",
            ttl_seconds=ttl_seconds,
            max_ttl_seconds=limit,
        )
    return ttl_seconds


def _text(name: str, value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_params(f"{name} must be a string")
    if len(value) > limit:
        raise invalid_params(f"{name} is {len(value)} characters; the limit is {limit}")
    return value.strip() or None


def _metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_params("metadata must be a JSON object")
    size = len(orjson.dumps(value))
    if size > METADATA_MAX_BYTES:
        raise invalid_params(f"metadata is {size} bytes; the limit is {METADATA_MAX_BYTES}")
    return value


async def _lock(conn: asyncpg.Connection, project_id: str, patterns: list[Pattern]) -> datetime:
    """Take the advisory locks of these patterns (see the module doc);
    return the time they were all held."""
    keys = [key for pattern in patterns for key in pattern.lock_keys()]
    # The acquire statement that follows is a large CTE whose best plan does
    # not depend on its values; PostgreSQL would otherwise replan it on
    # every execution, which costs more than running it (0.85 -> 0.39 ms).
    # set_config(..., true) lasts until the end of this transaction.
    at: datetime = await conn.fetchval(
        "SELECT reservation_locks($1, $2::text[], $3::boolean[])"
        " FROM set_config('plan_cache_mode', 'force_generic_plan', true)",
        project_id,
        [key for key, _ in keys],
        [exclusive for _, exclusive in keys],
    )
    return at


# -- acquire ----------------------------------------------------------------------

# $5 is the time the locks were held. For each requested pattern q, ``hit``
# finds other holders' live reservations it overlaps (the rules of
# hub.services.paths): exact rows by index (equal path, or inside a glob's
# prefix range and matching its regex), glob rows by glob-vs-path regex or
# glob-vs-glob prefix/suffix agreement. Patterns without a hit are inserted,
# or renew the holder's own row. ``old`` is the holder's rows as they were
# before this statement: whether an upsert renewed a live row or replaced
# an expired one (which then gets its reservation.expired).
_ACQUIRE = """
WITH q AS (
    SELECT * FROM unnest($10::text[], $11::boolean[], $12::text[], $13::text[], $14::text[],
                         $15::text[], $16::text[])
        AS q(path, is_glob, regex, prefix, suffix, low, high)
),
hit AS (
    SELECT q.path AS requested, c.*
    FROM q CROSS JOIN LATERAL (
        SELECT r.* FROM reservations r
        WHERE r.project_id = $1 AND NOT q.is_glob AND NOT r.is_glob AND r.path = q.path
        UNION ALL
        SELECT r.* FROM reservations r
        WHERE r.project_id = $1 AND q.is_glob AND NOT r.is_glob
          AND r.path >= q.low AND r.path < q.high AND r.path ~ q.regex
        UNION ALL
        SELECT r.* FROM reservations r
        WHERE r.project_id = $1 AND r.is_glob AND CASE
            WHEN q.is_glob THEN
                (starts_with(r.literal_prefix, q.prefix) OR starts_with(q.prefix, r.literal_prefix))
                AND (right(r.literal_suffix, length(q.suffix)) = q.suffix
                     OR right(q.suffix, length(r.literal_suffix)) = r.literal_suffix)
            ELSE starts_with(q.path, r.literal_prefix) AND q.path ~ r.pattern_regex
        END
    ) c
    WHERE c.expires_at > $5 AND c.holder_agent_id <> $2 AND (c.exclusive OR $4)
),
old AS (
    SELECT r.id, r.path, r.exclusive, r.reason, r.bead_id, r.acquired_at, r.expires_at
    FROM reservations r JOIN q ON r.path = q.path
    WHERE r.project_id = $1 AND r.holder_agent_id = $2
),
ins AS (
    INSERT INTO reservations AS r (
        project_id, holder_agent_id, holder_alias, path, is_glob, pattern_regex,
        literal_prefix, literal_suffix, exclusive, reason, bead_id, metadata,
        acquired_at, expires_at)
    SELECT $1, $2, $3, q.path, q.is_glob, q.regex, q.prefix, q.suffix, $4, $7, $8,
           coalesce($9::jsonb, '{}'::jsonb), $5, $5 + make_interval(secs => $6)
    FROM q
    WHERE NOT EXISTS (SELECT 1 FROM hit WHERE hit.requested = q.path)
    ON CONFLICT (project_id, holder_agent_id, path) DO UPDATE SET
        id = CASE WHEN r.expires_at > $5 THEN r.id ELSE excluded.id END,
        acquired_at = CASE WHEN r.expires_at > $5 THEN r.acquired_at
                           ELSE excluded.acquired_at END,
        reason = CASE WHEN r.expires_at > $5 THEN coalesce($7, r.reason) ELSE $7 END,
        bead_id = CASE WHEN r.expires_at > $5 THEN coalesce($8, r.bead_id) ELSE $8 END,
        metadata = CASE WHEN r.expires_at > $5 THEN coalesce($9::jsonb, r.metadata)
                        ELSE excluded.metadata END,
        holder_alias = excluded.holder_alias,
        exclusive = excluded.exclusive,
        expires_at = excluded.expires_at
    RETURNING r.id, r.path, r.exclusive, r.reason, r.bead_id, r.metadata, r.acquired_at,
              r.expires_at, (r.xmax <> 0) AS updated
)
SELECT 'granted' AS kind, i.path AS requested, i.id, $2::uuid AS holder_agent_id,
       $3::text AS holder_alias, i.path, i.exclusive, i.reason, i.bead_id, i.metadata,
       i.acquired_at, i.expires_at, i.updated,
       o.id AS old_id, o.exclusive AS old_exclusive, o.reason AS old_reason,
       o.bead_id AS old_bead_id, o.acquired_at AS old_acquired_at,
       o.expires_at AS old_expires_at
FROM ins i LEFT JOIN old o ON o.path = i.path
UNION ALL
SELECT 'conflict', h.requested, h.id, h.holder_agent_id, h.holder_alias, h.path, h.exclusive,
       h.reason, h.bead_id, h.metadata, h.acquired_at, h.expires_at, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL
FROM hit h
"""


async def acquire(
    hub: Hub,
    actor: Actor,
    paths: Sequence[str],
    *,
    ttl_seconds: int | None = None,
    exclusive: bool = True,
    reason: str | None = None,
    bead_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Reserve ``paths`` for the calling agent. Returns ``granted``
    [{reservation_id, path, exclusive, acquired_at, expires_at, renewed}]
    and ``conflicts`` (see :func:`_conflict`); a conflicting path is not
    granted. Announces ``reservation.granted`` (``reservation.renewed``
    when the caller already held that pattern)."""
    agent_id = actor.require_agent()
    patterns = _patterns(paths)
    ttl = _ttl(hub, ttl_seconds)
    reason = _text("reason", reason, REASON_MAX)
    bead_id = _text("bead_id", bead_id, BEAD_ID_MAX)
    metadata = _metadata(metadata)
    granted: list[dict[str, Any]] = []
    conflicts: list[dict[str, Any]] = []
    async with change(hub, actor.project_id) as tx:
        at = await _lock(tx.conn, actor.project_id, patterns)
        rows = await tx.conn.fetch(
            _ACQUIRE,
            actor.project_id,
            agent_id,
            actor.alias,
            bool(exclusive),
            at,
            float(ttl),
            reason,
            bead_id,
            metadata,
            [p.path for p in patterns],
            [p.is_glob for p in patterns],
            [p.regex for p in patterns],
            [p.prefix for p in patterns],
            [p.suffix for p in patterns],
            [p.range_low for p in patterns],
            [p.range_high for p in patterns],
        )
        for row in rows:
            if row["kind"] == "conflict":
                conflicts.append(_conflict(row, at))
                continue
            old_expiry = row["old_expires_at"]
            renewed = bool(row["updated"]) and old_expiry is not None and old_expiry > at
            if row["updated"] and not renewed and row["old_id"] is not None:
                tx.emit("reservation.expired", _replaced_event(row))
            data = _event_data(row)
            tx.emit("reservation.renewed" if renewed else "reservation.granted", data)
            granted.append(_granted(row, renewed))
    order = {p.path: i for i, p in enumerate(patterns)}
    granted.sort(key=lambda g: order[g["path"]])
    conflicts.sort(key=lambda c: (order[c["path"]], c["expires_at"], c["holder_alias"]))
    _schedule_all(hub, actor.project_id, granted)
    return {"granted": granted, "conflicts": conflicts}


def _granted(row: asyncpg.Record, renewed: bool) -> dict[str, Any]:
    return {
        "reservation_id": row["id"],
        "path": row["path"],
        "exclusive": row["exclusive"],
        "acquired_at": iso(row["acquired_at"]),
        "expires_at": iso(row["expires_at"]),
        "renewed": renewed,
        "_expires": row["expires_at"],
    }


def _replaced_event(row: asyncpg.Record) -> dict[str, Any]:
    """The expired row an upsert just replaced, as it was."""
    return _event_data(
        {
            "id": row["old_id"],
            "path": row["path"],
            "holder_alias": row["holder_alias"],
            "holder_agent_id": row["holder_agent_id"],
            "exclusive": row["old_exclusive"],
            "reason": row["old_reason"],
            "bead_id": row["old_bead_id"],
            "acquired_at": row["old_acquired_at"],
            "expires_at": row["old_expires_at"],
        }
    )


def _schedule_all(hub: Hub, project_id: str, granted: list[dict[str, Any]]) -> None:
    expiry = _machines.get(id(hub))
    for item in granted:
        expires = item.pop("_expires")
        if expiry is not None:
            expiry.schedule(project_id, item["reservation_id"], expires)


# -- renew, release, revoke ----------------------------------------------------------------


async def renew(
    hub: Hub, actor: Actor, paths: Sequence[str], ttl_seconds: int | None = None
) -> dict[str, Any]:
    """Extend the caller's live reservations on ``paths`` to now + TTL.
    Returns ``renewed`` [{reservation_id, path, exclusive, acquired_at,
    expires_at}] and ``not_found`` (paths the caller holds no live
    reservation on). Announces ``reservation.renewed``."""
    agent_id = actor.require_agent()
    patterns = _patterns(paths)
    ttl = _ttl(hub, ttl_seconds)
    async with change(hub, actor.project_id) as tx:
        # The locks order this renewal against a request that would take
        # the path the moment it expires.
        at = await _lock(tx.conn, actor.project_id, patterns)
        rows = await tx.conn.fetch(
            f"""
            UPDATE reservations r SET expires_at = $4 + make_interval(secs => $5)
            WHERE r.project_id = $1 AND r.holder_agent_id = $2 AND r.path = ANY($3::text[])
              AND r.expires_at > $4
            RETURNING {_COLUMNS}
            """,
            actor.project_id,
            agent_id,
            [p.path for p in patterns],
            at,
            float(ttl),
        )
        for row in rows:
            tx.emit("reservation.renewed", _event_data(row))
    renewed = [_granted(row, True) for row in rows]
    for item in renewed:
        item.pop("renewed")
    _schedule_all(hub, actor.project_id, renewed)
    found = {r["path"] for r in renewed}
    return {
        "renewed": renewed,
        "not_found": [p.path for p in patterns if p.path not in found],
    }


_RELEASE = f"""
WITH gone AS (
    DELETE FROM reservations r
    WHERE r.project_id = $1 AND r.holder_agent_id = $2 AND r.path = ANY($3::text[])
    RETURNING {_COLUMNS}, r.expires_at > now() AS live
)
SELECT true AS mine, * FROM gone
UNION ALL
SELECT false, {_COLUMNS}, true FROM reservations r
WHERE r.project_id = $1 AND r.holder_agent_id <> $2 AND r.path = ANY($3::text[])
  AND r.expires_at > now()
"""


async def release(hub: Hub, actor: Actor, paths: Sequence[str]) -> dict[str, Any]:
    """Drop the caller's reservations on ``paths`` (bdh's UnlockResponse):
    ``released`` (were live), ``not_owner`` (someone else holds that
    pattern), ``not_found``. Announces ``reservation.released``."""
    agent_id = actor.require_agent()
    patterns = _patterns(paths)
    requested = [p.path for p in patterns]
    async with change(hub, actor.project_id) as tx:
        # One statement: the caller's rows go, and the live rows of other
        # holders on the same patterns (untouched by the DELETE) say "not_owner".
        found = await tx.conn.fetch(_RELEASE, actor.project_id, agent_id, requested)
        rows = [row for row in found if row["mine"]]
        released = set()
        for row in rows:
            if row["live"]:
                released.add(row["path"])
                tx.emit("reservation.released", _event_data(row))
            else:
                tx.emit("reservation.expired", _event_data(row))
    rest = [p for p in requested if p not in released]
    _cancel_all(hub, [row["id"] for row in rows])
    others = {row["path"] for row in found if not row["mine"]}
    return {
        "released": [p for p in requested if p in released],
        "not_found": [p for p in rest if p not in others],
        "not_owner": [p for p in rest if p in others],
    }


async def revoke(
    hub: Hub,
    actor: Actor,
    *,
    paths: Sequence[str] | None = None,
    prefix: str | None = None,
) -> dict[str, Any]:
    """Remove anyone's live reservations: those on exactly ``paths``,
    and/or every one whose pattern starts with ``prefix`` (``""``: all of
    the project's). Humans and coordinators only (FORBIDDEN otherwise).
    Returns ``revoked_count``, ``revoked_keys`` and ``revoked`` (the
    reservations as they were). Announces ``reservation.revoked``."""
    requested = [p.path for p in _patterns(paths)] if paths is not None else None
    start = normalise_prefix(prefix)
    if requested is None and start is None:
        raise invalid_params('give paths or prefix ("" revokes every reservation)')
    by = (actor.human_name or actor.alias) if actor.is_human else actor.alias
    async with change(hub, actor.project_id) as tx:
        await policies.require_coordinator_or_human(tx.conn, actor, "revoke reservations")
        rows = await tx.conn.fetch(
            f"""
            DELETE FROM reservations r
            WHERE r.project_id = $1 AND r.expires_at > now()
              AND (r.path = ANY($2::text[]) OR starts_with(r.path, $3))
            RETURNING {_COLUMNS}, 0 AS ttl_remaining
            """,
            actor.project_id,
            requested,
            start,
        )
        for row in rows:
            tx.emit("reservation.revoked", {**_event_data(row), "revoked_by": by})
    _cancel_all(hub, [row["id"] for row in rows])
    revoked = sorted((view(row) for row in rows), key=lambda v: (v["path"], v["holder_alias"]))
    return {
        "revoked_count": len(revoked),
        "revoked_keys": sorted({v["path"] for v in revoked}),
        "revoked": revoked,
    }


def _cancel_all(hub: Hub, reservation_ids: list[str]) -> None:
    expiry = _machines.get(id(hub))
    if expiry is not None:
        for reservation_id in reservation_ids:
            expiry.cancel(reservation_id)


# -- reading ------------------------------------------------------------------------


async def list_active(
    hub: Hub,
    project_id: str,
    *,
    holder_alias: str | None = None,
    path_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """The project's live reservations (see :func:`view`), by path; only
    those of ``holder_alias`` / whose pattern starts with ``path_prefix``."""
    rows = await hub.store.fetch(
        f"""
        SELECT {_COLUMNS},
               greatest(0, ceil(extract(epoch FROM r.expires_at - now())))::int
                   AS ttl_remaining
        FROM reservations r
        WHERE r.project_id = $1 AND r.expires_at > now()
          AND ($2::text IS NULL OR r.holder_alias = $2)
          AND ($3::text IS NULL OR starts_with(r.path, $3))
        ORDER BY r.path, r.acquired_at, r.holder_alias
        """,
        project_id,
        holder_alias,
        normalise_prefix(path_prefix),
    )
    return [view(row) for row in rows]


# -- expiry ---------------------------------------------------------------------------


async def expire_one(hub: Hub, project_id: str, reservation_id: str) -> datetime | None:
    """Delete one reservation if it has expired, announcing
    ``reservation.expired``. If it is still live (renewed meanwhile, or the
    clocks disagree) return its expiry, to check again then."""
    async with change(hub, project_id) as tx:
        row = await tx.conn.fetchrow(
            f"DELETE FROM reservations r WHERE r.id = $1 AND r.project_id = $2 "
            f"AND r.expires_at <= now() RETURNING {_COLUMNS}",
            reservation_id,
            project_id,
        )
        if row is not None:
            tx.emit("reservation.expired", _event_data(row))
            return None
        expires: datetime | None = await tx.conn.fetchval(
            "SELECT expires_at FROM reservations WHERE id = $1 AND project_id = $2",
            reservation_id,
            project_id,
        )
        return expires


async def sweep(hub: Hub) -> int:
    """Delete every expired reservation (of any project), announcing each;
    return how many. Skipped while another instance is sweeping."""
    count = 0
    async with hub.store.connection() as conn:
        if not await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", SWEEP_LOCK
        ):
            return 0
        try:
            projects = await conn.fetch(
                "SELECT DISTINCT project_id FROM reservations WHERE expires_at <= now()"
            )
            for row in projects:
                count += await _sweep_project(hub, row["project_id"])
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", SWEEP_LOCK)
    return count


async def _sweep_project(hub: Hub, project_id: str) -> int:
    count = 0
    while True:
        async with change(hub, project_id) as tx:
            # SKIP LOCKED: a row some timer is deleting right now is its to announce.
            rows = await tx.conn.fetch(
                f"""
                DELETE FROM reservations r WHERE r.id IN (
                    SELECT id FROM reservations
                    WHERE project_id = $1 AND expires_at <= now()
                    LIMIT $2 FOR UPDATE SKIP LOCKED)
                RETURNING {_COLUMNS}
                """,
                project_id,
                SWEEP_BATCH,
            )
            for row in rows:
                tx.emit("reservation.expired", _event_data(row))
        count += len(rows)
        if len(rows) < SWEEP_BATCH:
            return count


class Expiry:
    """One hub's expiry timers (for what this instance granted or renewed)
    and its safety-net sweep."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="reservation-sweep")

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def schedule(
        self, project_id: str, reservation_id: str, expires_at: datetime, least: float = 0.0
    ) -> None:
        self.cancel(reservation_id)
        delay = (expires_at - clock.now()).total_seconds() + EXPIRY_GRACE_SECONDS
        loop = asyncio.get_running_loop()
        self._timers[reservation_id] = loop.call_later(
            max(delay, least), self._fire, project_id, reservation_id
        )

    def cancel(self, reservation_id: str) -> None:
        handle = self._timers.pop(reservation_id, None)
        if handle is not None:
            handle.cancel()

    @property
    def pending(self) -> int:
        return len(self._timers)

    def _fire(self, project_id: str, reservation_id: str) -> None:
        self._timers.pop(reservation_id, None)
        task = asyncio.create_task(self._expire(project_id, reservation_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, project_id: str, reservation_id: str) -> None:
        try:
            still = await expire_one(self.hub, project_id, reservation_id)
        except Exception as exc:  # the sweep catches what a failed timer left
            logger.warning("expiring reservation %s failed: %s", reservation_id, exc)
            return
        if still is not None and reservation_id not in self._timers:
            self.schedule(project_id, reservation_id, still, least=RECHECK_SECONDS)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                swept = await sweep(self.hub)
                if swept:
                    logger.info("swept %d expired reservations", swept)
            except Exception as exc:
                logger.warning("reservation sweep failed: %s", exc)
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)


_machines: dict[int, Expiry] = {}


def start(hub: Hub) -> Expiry:
    """Start this hub's expiry timers and sweep (app lifespan start-up)."""
    expiry = _machines.get(id(hub))
    if expiry is None:
        expiry = _machines[id(hub)] = Expiry(hub)
        expiry.start()
    return expiry


async def stop(hub: Hub | None = None) -> None:
    """Stop the machinery of ``hub`` (of every hub when None): lifespan
    shutdown. Rows left behind expire through another instance's sweep, or
    this one's at its next start-up."""
    keys = list(_machines) if hub is None else [id(hub)]
    for key in keys:
        expiry = _machines.pop(key, None)
        if expiry is not None:
            await expiry.stop()
