"""Retry-safe writes: a state-changing call repeated with the same
``idempotency_key`` within 24 hours returns the first answer and changes
nothing, on any instance.

How (:func:`run`). The call runs in one transaction that first inserts
the key's row (``idempotency_keys``, migration 0016; per project, caller
and key) and last stores the answer in it. Every store call of the service
inside runs on that transaction's connection (``Store.use``): its
``events.change`` blocks become savepoints, a group-commit write is made
directly on it (alone, not batched), and events are published only after
the outer commit (:func:`hub.services.events.deferring`). So the key is
stored exactly when the change committed. A repeat finds the row and
returns the stored answer; a concurrent repeat blocks on the first's
uncommitted row, then reads its answer (or, if the first failed and rolled
back, runs itself). A key reused for another method or other parameters
is INVALID_PARAMS. Errors are not stored: a call that failed changed
nothing, so its repeat runs again.

Calls without a key take none of this path: no extra statement, and the
hot paths (mail send, reservation acquire) stay in group commit. A keyed
mail send claims its key inside its group-commit statement
(hub.services.mail, migration 0024) and comes here only when the key was
taken, to read the first answer.

A call that waits (``wait``: a queued claim or acquire, a chat send that
waits for a reply) cannot hold a transaction open for its wait. Queued
claims and acquires are idempotent by nature for the same holder (a
repeat renews what the caller already holds), so :func:`run` with
``atomic=False`` only returns a stored answer or stores the answer after
the call; chat.send stores its message atomically with the key and waits
outside (:mod:`hub.services.chat`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from hub.services import events
from hub.services.context import Actor, Hub
from protocol.errors import invalid_params

T = TypeVar("T")

_CLAIM = """
INSERT INTO idempotency_keys AS k (project_id, principal, key, method, fingerprint)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (project_id, principal, key) DO UPDATE
    SET method = excluded.method, fingerprint = excluded.fingerprint, response = NULL,
        created_at = now()
    WHERE k.created_at <= now() - interval '24 hours'
RETURNING true
"""

_STORED = """
SELECT method, fingerprint, response FROM idempotency_keys
WHERE project_id = $1 AND principal = $2 AND key = $3
  AND created_at > now() - interval '24 hours'
"""

_ANSWER = """
UPDATE idempotency_keys SET response = $4
WHERE project_id = $1 AND principal = $2 AND key = $3
"""

_STORE_LOOSE = """
INSERT INTO idempotency_keys AS k (project_id, principal, key, method, fingerprint, response)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (project_id, principal, key) DO UPDATE
    SET method = excluded.method, fingerprint = excluded.fingerprint,
        response = excluded.response, created_at = now()
    WHERE k.created_at <= now() - interval '24 hours'
"""


def check_key(key: Any) -> None:
    if not isinstance(key, str) or not 1 <= len(key) <= 200:
        raise invalid_params("idempotency_key must be 1 to 200 characters")


def principal(actor: Actor) -> str:
    """Whose keys: an agent's own, or the project's human by name."""
    return actor.agent_id or f"human:{actor.human_name or actor.alias}"


def fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _replay(row: Any, method: str, digest: str, key: str) -> Any:
    if row["method"] != method or row["fingerprint"] != digest:
        raise invalid_params(
            f"idempotency_key {key!r} was used for another request"
            f" ({row['method']}) in the last 24 hours; use a new key",
            idempotency_key=key,
        )
    return row["response"]


async def run(
    hub: Hub,
    actor: Actor,
    method: str,
    key: str,
    params: dict[str, Any],
    call: Callable[[], Awaitable[T]],
    *,
    atomic: bool = True,
) -> T:
    """``await call()`` once per key (see the module doc); ``params`` (the
    request without its key) must match on a repeat."""
    check_key(key)
    who = principal(actor)
    digest = fingerprint(params)
    ids = (actor.project_id, who, key)
    if not atomic:
        return await _run_loose(hub, ids, method, digest, call)
    with events.deferring() as published:
        async with hub.store.connection() as conn, hub.store.use(conn), conn.transaction():
            if await conn.fetchval(_CLAIM, *ids, method, digest) is None:
                row = await conn.fetchrow(_STORED, *ids)
                if row is not None:
                    result: T = _replay(row, method, digest, key)
                    return result
            result = await call()
            await conn.execute(_ANSWER, *ids, result)
    await events.flush(hub, published)
    return result


async def _run_loose(
    hub: Hub,
    ids: tuple[str, str, str],
    method: str,
    digest: str,
    call: Callable[[], Awaitable[T]],
) -> T:
    row = await hub.store.fetchrow(_STORED, *ids)
    if row is not None and row["response"] is not None:
        stored: T = _replay(row, method, digest, ids[2])
        return stored
    result = await call()
    await hub.store.execute(_STORE_LOOSE, *ids, method, digest, result)
    return result
