"""File reservations: short-lived advisory locks on repo paths and globs.

Reservations are advisory: a conflict informs the caller (who holds it,
until when, when to retry); it does not stop an edit. An agent reserves a
list of paths or globs (see :mod:`hub.services.paths` for the syntax and
the overlap rules), exclusive (the default) or shared. Shared never
conflicts with shared; anything conflicts with another holder's exclusive
reservation, and an exclusive request with another holder's shared one. A
conflicting path is not granted; the others in the same request are. The
same holder reserving the same pattern again renews it.

Deciding across instances. A request first takes transaction-scoped
advisory locks (``reservation_locks``, migration 0011): shared on every
ancestor directory of each pattern, exclusive on the pattern's own key (its
file, or a glob's literal directory), all in one pass in one global order.
Two requests that could overlap always collide on some key, so they run one
after the other; requests on unrelated paths take no common exclusive key
and run in parallel. Every transaction takes all its locks in that one
ordered pass before anything else, so none waits for a lock while holding
one another waiting transaction needs: they never deadlock on these locks.
The conflict check must see what the previous lock holder committed, so it
cannot be in the statement that takes the locks (a statement's snapshot
predates its locks): acquiring is one call of the plpgsql function
``reservation_acquire_batch``, whose statements each take a fresh snapshot
under READ COMMITTED. It takes the locks, checks, inserts or renews, and
stores the events, in autocommit: one round trip, committed when it
returns. Releasing is one call of ``reservation_release_batch`` (DELETE
and event inserts). Both build their event payloads in
SQL (``reservation_event_data``: what :func:`_event_data` builds for renew,
revoke and expiry). Events are published after the commit.

Batches. Acquires and releases go through group commit
(:mod:`hub.store.group_commit`): calls that arrive while earlier ones are
being written are written together, a batch of acquires by one call of
``reservation_acquire_batch`` and a batch of releases by one statement,
each in one transaction with one commit. Why that is safe:

- Group commit never puts two acquires whose locks collide into one batch
  (``locks=``): the calls of a batch cannot overlap, so none can be decided
  differently for another's write, and one statement decides them all as
  it would each alone. A colliding call waits for a later batch, which
  its locks then order after this one.
- A batch holds every lock of its calls until it commits, so a call waits
  at most for the batch ahead of it on the same keys.
- A release takes no advisory locks; its DELETE locks the caller's own rows.
  A batch can still wait for a row lock (another transaction deleting or
  renewing the same row: a revoke, an expiry, the same agent acquiring and
  releasing one path at once), and in such rare cases two transactions may
  deadlock; PostgreSQL aborts one after deadlock_timeout, and a batch it
  aborts is rerun call by call. The decisions stay correct either way.

Measured (benchmark ``reservations``, 64 agents acquiring and releasing;
docs/benchmarks.md): one call per acquire and release, pipelined per batch,
cost PostgreSQL about 350 µs per pair on this machine, most of it setting
up the statement's executor for each call; one statement per batch costs
about 150 µs.

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
import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from hub.services import background, clock, events, idempotency, policies, queues
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from hub.services.events import change
from hub.services.paths import Pattern, normalise_prefix, overlaps, parse
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
r.reason, r.bead_id, r.metadata, r.acquired_at, r.expires_at, r.token
"""


#: The columns of a reservation row (``r``), for other services' statements.
COLUMNS = _COLUMNS


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
        "token": row["token"],
    }


def _event_data(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """An event's payload; acquire and release build the same in SQL
    (``reservation_event_data``, migration 0006)."""
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
        "token": row["token"],
    }


def _seconds_until(moment: datetime, at: datetime) -> int:
    return max(1, math.ceil((moment - at).total_seconds()))


def _conflict(row: asyncpg.Record | dict[str, Any], at: datetime) -> dict[str, Any]:
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
    at: datetime = await conn.fetchval(
        "SELECT reservation_locks($1::uuid[], $2::text[], $3::boolean[])",
        [project_id] * len(keys),
        [key for key, _ in keys],
        [exclusive for _, exclusive in keys],
    )
    return at


# -- batches ------------------------------------------------------------------------
# Concurrent acquires, and concurrent releases, are written together
# (hub.store.group_commit), a batch in one set-based statement (see the
# module doc). Its rows carry the 1-based ``call`` they belong to.


def _by_call(rows: Sequence[asyncpg.Record], calls: int) -> list[list[asyncpg.Record]]:
    """A batch statement's rows, one list per call, in the calls' order."""
    grouped: list[list[asyncpg.Record]] = [[] for _ in range(calls)]
    for row in rows:
        grouped[row["call"] - 1].append(row)
    return grouped


def _kind(rows: list[asyncpg.Record], kind: str) -> list[asyncpg.Record]:
    return [row for row in rows if row["kind"] == kind]


async def _publish(hub: Hub, rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """Publish, in their order, the events a committed call stored (its
    'event' rows); return them as ``{"type": ..., **payload}``."""
    stored = sorted(_kind(rows, "event"), key=lambda row: int(row["ev_seq"]))
    await events.publish_rows(hub, stored)
    return [{"type": row["ev_type"], **row["ev_payload"]} for row in stored]


# -- acquire ----------------------------------------------------------------------

_ACQUIRE_BATCH = "SELECT * FROM reservation_acquire_batch($1)"


def _acquire_locks(call: tuple[Any, ...]) -> list[tuple[tuple[str, str], bool]]:
    """The advisory locks an acquire takes (group commit keeps calls whose
    locks collide out of one batch)."""
    project_id, keys = call[0], call[-1]
    return [((project_id, key), exclusive) for key, exclusive in keys]


async def write_acquires(
    conn: asyncpg.Connection, calls: list[tuple[Any, ...]]
) -> list[list[asyncpg.Record]]:
    """Decide and write a batch of acquires, each ``(project_id, agent_id,
    alias, exclusive, ttl, reason, bead_id, metadata, patterns, lock_keys)``,
    no two of which collide: one list of rows per call, in order."""
    batch = [
        [
            *call[:-2],
            [
                (p.path, p.is_glob, p.regex, p.prefix, p.suffix, p.range_low, p.range_high)
                for p in call[-2]
            ],
            call[-1],
        ]
        for call in calls
    ]
    return _by_call(await conn.fetch(_ACQUIRE_BATCH, batch), len(calls))


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
    wait: float | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Reserve ``paths`` for the calling agent. Returns ``granted``
    [{reservation_id, path, exclusive, acquired_at, expires_at, renewed,
    token}] and ``conflicts`` (see :func:`_conflict`); a conflicting path is
    not granted. Announces ``reservation.granted`` (``reservation.renewed``
    when the caller already held that pattern). With ``wait`` (seconds) a
    conflicting path is waited for in line (:func:`_acquire_waiting`)."""
    agent_id = actor.require_agent()
    patterns = _patterns(paths)
    ttl = _ttl(hub, ttl_seconds)
    reason = _text("reason", reason, REASON_MAX)
    bead_id = _text("bead_id", bead_id, BEAD_ID_MAX)
    metadata = _metadata(metadata)
    waiting = queues.check_wait(hub, wait)
    if waiting is not None:
        options = (bool(exclusive), float(ttl), reason, bead_id, metadata)
        if idempotency_key is None:
            return await _acquire_waiting(hub, actor, patterns, waiting, options)
        request = {"paths": [p.path for p in patterns], "wait": waiting, "options": options}
        return await idempotency.run(
            hub,
            actor,
            "reservations.acquire",
            idempotency_key,
            request,
            lambda: _acquire_waiting(hub, actor, patterns, waiting, options),
            atomic=False,
        )
    options = (bool(exclusive), float(ttl), reason, bead_id, metadata)
    granted, conflicts = await _acquire_now(hub, actor, agent_id, patterns, options)
    return {"granted": granted, "conflicts": conflicts}


async def _acquire_now(
    hub: Hub, actor: Actor, agent_id: str, patterns: list[Pattern], options: tuple[Any, ...]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One acquire through group commit: (granted, conflicts), in the
    order of ``patterns``."""
    keys = [key for pattern in patterns for key in pattern.lock_keys()]
    group = hub.store.group_commit(
        "reservations.acquire", lambda: write_acquires, locks=_acquire_locks
    )
    rows: list[asyncpg.Record] = await group.submit(
        actor.project_id, agent_id, actor.alias, *options, patterns, keys
    )
    # Committed (alone or in a batch): now it may be announced. A grant or
    # renewal is known by its event (the other kind: an expired row replaced).
    announced = await _publish(hub, rows)
    order = {p.path: i for i, p in enumerate(patterns)}
    granted = sorted(
        (
            _granted(data, renewed=data["type"] == "reservation.renewed")
            for data in announced
            if data["type"] != "reservation.expired"
        ),
        key=lambda g: order[g["path"]],
    )
    conflicts = sorted(
        (_conflict(row, row["locked_at"]) for row in _kind(rows, "conflict")),
        key=lambda c: (order[c["path"]], c["expires_at"], c["holder_alias"]),
    )
    _schedule_all(hub, actor.project_id, granted)
    return granted, conflicts


def _overlap(a: str, b: str) -> bool:
    return overlaps(parse(a), parse(b))


async def _acquire_waiting(
    hub: Hub, actor: Actor, patterns: list[Pattern], wait: float, options: tuple[Any, ...]
) -> dict[str, Any]:
    """Acquire, waiting in line (:mod:`hub.services.queues`) for what
    conflicts until all is granted or ``wait`` ends. Returns ``granted``
    (everything granted during the call), ``conflicts`` (of the last
    attempt, when the wait ended without all), ``queued`` (paths still not
    granted), ``status`` (``granted`` or ``timeout``), ``waited_seconds``."""
    exclusive = options[0]
    pending = list(patterns)
    granted: list[dict[str, Any]] = []
    conflicts: list[dict[str, Any]] = []

    def frees(data: dict[str, Any]) -> bool:
        released = parse(data["path"])
        return any(overlaps(released, p) for p in pending)

    async with queues.Turn(hub, actor, "reservation", wait, frees) as turn:
        while pending:
            turn.woken.clear()
            keys = [(p.path, exclusive) for p in pending]
            queued = all(p.path in turn.rows for p in pending)
            blocked = await turn.blocked(keys, _overlap) if queued else set()
            if queued and not blocked:
                # First in line for everything it waits for: no earlier
                # waiter can appear any more, so a plain acquire decides.
                got, conflicts = await _acquire_now(hub, actor, turn.agent_id, pending, options)
                await turn.leave_granted([g["path"] for g in got])
                taken = {c["path"] for c in conflicts}
                pending = [p for p in pending if p.path in taken]
                granted.extend(got)
            elif len(blocked) < len(keys):
                got, conflicts, pending = await _attempt(hub, actor, turn, pending, options)
                granted.extend(got)
            if pending and not await turn.sleep():
                break
        waited = turn.waited_seconds
    order = {p.path: i for i, p in enumerate(patterns)}
    return {
        "granted": sorted(granted, key=lambda g: order[g["path"]]),
        "conflicts": conflicts if pending else [],
        "queued": [p.path for p in pending],
        "status": "timeout" if pending else "granted",
        "waited_seconds": waited,
    }


async def _attempt(
    hub: Hub,
    actor: Actor,
    turn: queues.Turn,
    pending: list[Pattern],
    options: tuple[Any, ...],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Pattern]]:
    """One try of a waiting acquire, in one transaction under the paths'
    locks: acquire what no earlier waiter is queued for, queue for what is
    still taken. Returns (granted, conflicts, still pending)."""
    project_id, exclusive = actor.project_id, options[0]
    rows: list[asyncpg.Record] = []
    async with hub.store.connection() as conn, conn.transaction():
        await _lock(conn, project_id, pending)
        line = await turn.line(conn)
        blocked = {
            p.path for p in pending if turn.ahead(line, p.path, exclusive, _overlap) is not None
        }
        trying = [p for p in pending if p.path not in blocked]
        if trying:
            keys = [key for p in trying for key in p.lock_keys()]
            call = (project_id, actor.agent_id, actor.alias, *options, trying, keys)
            rows = (await write_acquires(conn, [call]))[0]
        taken = {row["requested"] for row in _kind(rows, "conflict")}
        still = [p for p in pending if p.path in blocked or p.path in taken]
        await turn.granted(conn, [p.path for p in trying if p.path not in taken])
        queued = [
            await events.store(conn, project_id, type_, data)
            for type_, data in await turn.enter(conn, [(p.path, exclusive) for p in still])
        ]
    announced = await _publish(hub, rows)
    for event in queued:
        await events.publish(hub, event)
    granted = [
        _granted(data, renewed=data["type"] == "reservation.renewed")
        for data in announced
        if data["type"] != "reservation.expired"
    ]
    _schedule_all(hub, project_id, granted)
    conflicts = [_conflict(row, row["locked_at"]) for row in _kind(rows, "conflict")]
    return granted, conflicts, still


def _granted(data: dict[str, Any], renewed: bool) -> dict[str, Any]:
    """A granted or renewed reservation as the caller gets it, from its
    event's payload (:func:`_event_data`)."""
    return {
        "reservation_id": data["reservation_id"],
        "path": data["path"],
        "exclusive": data["exclusive"],
        "acquired_at": data["acquired_at"],
        "expires_at": data["expires_at"],
        "renewed": renewed,
        "token": data["token"],
    }


def _schedule_all(hub: Hub, project_id: str, granted: list[dict[str, Any]]) -> None:
    expiry = _machines.get(id(hub))
    if expiry is not None:
        for item in granted:
            expiry.schedule(project_id, item["reservation_id"], clock.parse(item["expires_at"]))


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
    renewed = [_granted(_event_data(row), True) for row in rows]
    for item in renewed:
        item.pop("renewed")
    _schedule_all(hub, actor.project_id, renewed)
    found = {r["path"] for r in renewed}
    return {
        "renewed": renewed,
        "not_found": [p.path for p in patterns if p.path not in found],
    }


# A batch of releases is one call of reservation_release_batch (migration
# 0011): rows 'event' (reservation.released, or .expired for a row that had
# expired) and 'other' (a live row of another holder on that pattern).
_RELEASE_BATCH = "SELECT * FROM reservation_release_batch($1)"


async def write_releases(
    conn: asyncpg.Connection, calls: list[tuple[Any, ...]]
) -> list[list[asyncpg.Record]]:
    """Write a batch of releases, each ``(project_id, agent_id, paths)``:
    one list of rows per call, in order."""
    return _by_call(await conn.fetch(_RELEASE_BATCH, calls), len(calls))


async def release(hub: Hub, actor: Actor, paths: Sequence[str]) -> dict[str, Any]:
    """Drop the caller's reservations on ``paths`` (bdh's UnlockResponse):
    ``released`` (were live), ``not_owner`` (someone else holds that
    pattern), ``not_found``. Announces ``reservation.released``."""
    agent_id = actor.require_agent()
    requested = [p.path for p in _patterns(paths)]
    group = hub.store.group_commit("reservations.release", lambda: write_releases)
    rows: list[asyncpg.Record] = await group.submit(actor.project_id, agent_id, requested)
    # Committed (alone or in a batch): now it may be announced. What went
    # is known by its event (released if it was live, else expired).
    gone = await _publish(hub, rows)
    _cancel_all(hub, [data["reservation_id"] for data in gone])
    released = {data["path"] for data in gone if data["type"] == "reservation.released"}
    others = {row["path"] for row in _kind(rows, "other")}
    rest = [p for p in requested if p not in released]
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


def event_data(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """A reservation event's payload, for other services' releases."""
    return _event_data(row)


def cancel_timers(hub: Hub, reservation_ids: list[str]) -> None:
    """Forget the expiry timers of reservations some other change deleted."""
    _cancel_all(hub, reservation_ids)


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


_CHECK = f"""
SELECT q.i::int AS i, {_COLUMNS},
       greatest(0, ceil(extract(epoch FROM r.expires_at - now())))::int AS ttl_remaining
FROM unnest($2::text[], $3::boolean[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[]) WITH ORDINALITY AS q(path, is_glob, regex, prefix, suffix, low, high, i)
CROSS JOIN LATERAL (
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
) r
WHERE r.expires_at > now()
ORDER BY q.i, r.exclusive DESC, r.token
"""


async def check(hub: Hub, actor: Actor, paths: Sequence[str]) -> dict[str, Any]:
    """Who holds what: for each requested path, the live reservations
    overlapping it (see :func:`view`, each with its fencing ``token`` and
    ``mine``: the caller's own) and ``exclusive_holder`` (the exclusive
    one, or null). Read-only; agents and humans. A guard compares a token
    it saw with the current one to tell a stale holder from the current
    one."""
    patterns = _patterns(paths)
    rows = await hub.store.fetch(
        _CHECK,
        actor.project_id,
        [p.path for p in patterns],
        [p.is_glob for p in patterns],
        [p.regex for p in patterns],
        [p.prefix for p in patterns],
        [p.suffix for p in patterns],
        [p.range_low for p in patterns],
        [p.range_high for p in patterns],
    )
    held: list[list[dict[str, Any]]] = [[] for _ in patterns]
    for row in rows:
        held[row["i"] - 1].append({**view(row), "mine": row["holder_agent_id"] == actor.agent_id})
    return {
        "paths": [
            {
                "path": p.path,
                "holders": holders,
                "exclusive_holder": next((h for h in holders if h["exclusive"]), None),
            }
            for p, holders in zip(patterns, held, strict=True)
        ]
    }


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
        timers, self._timers = self._timers, {}
        await background.stop(timers.values(), [*self._tasks, self._sweeper])

    def schedule(
        self, project_id: str, reservation_id: str, expires_at: datetime, least: float = 0.0
    ) -> None:
        self.cancel(reservation_id)
        delay = (expires_at - clock.now()).total_seconds() + EXPIRY_GRACE_SECONDS
        self._timers[reservation_id] = background.later(
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
        background.spawn(self._expire(project_id, reservation_id), self._tasks)

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
