"""Credentials resolved to an Actor: agent api keys and browser tickets.

Keys and tickets are 256-bit random tokens, stored as a sha256 hash: with
nothing to brute-force, an unsalted fast hash is enough. Keys read
``aw_sk_`` + 43 characters because bdh keeps a key only in that form
(``aw_sk_`` and at least 38 characters); keys minted earlier as ``bh_...``
keep working, since only the hash is looked up.

Resolved credentials are cached for a few seconds because the HTTP shim
authenticates every request; a revocation (hub.services.revocation) drops
the matching entries on every instance at once, so the cache never keeps a
revoked key, a deleted agent or a signed-out ticket alive.

Each key resolved is noted as used (hub.services.key_use), which fills
``api_keys.last_used_at`` to the minute without a write per call.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import datetime
from typing import Any

import asyncpg

from hub.services import key_use
from hub.services.context import Actor, Hub
from protocol.errors import unauthorized

KEY_PREFIX = "aw_sk_"
TICKET_PREFIX = "bht_"
CACHE_SECONDS = 5.0
_CACHE_MAX = 10_000

#: digest -> (valid until (monotonic), actor, ticket expiry or None)
_cache: dict[bytes, tuple[float, Actor, datetime | None]] = {}


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


async def mint_key(conn: asyncpg.Connection, project_id: str, agent_id: str | None) -> str:
    key = new_secret(KEY_PREFIX)
    await conn.execute(
        "INSERT INTO api_keys (project_id, agent_id, key_hash, prefix) VALUES ($1, $2, $3, $4)",
        project_id,
        agent_id,
        digest(key),
        key[: len(KEY_PREFIX) + 6],
    )
    return key


_RESOLVE_KEY = """
SELECT k.id AS credential_id, k.project_id, p.slug, a.id AS agent_id, a.alias,
       a.human_name, a.role, a.granted_role, NULL::timestamptz AS expires_at
FROM api_keys k
JOIN projects p ON p.id = k.project_id
JOIN agents a ON a.id = k.agent_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND a.deleted_at IS NULL
"""

# An agent's ticket dies with its agent; a human's lives until it expires or
# is signed out.
_RESOLVE_TICKET = """
SELECT t.id AS credential_id, t.project_id, p.slug, a.id AS agent_id,
       coalesce(a.alias, 'human:' || t.human_name) AS alias,
       coalesce(a.human_name, t.human_name) AS human_name,
       coalesce(a.role, 'human') AS role, a.granted_role, t.expires_at
FROM browser_tickets t
JOIN projects p ON p.id = t.project_id
LEFT JOIN agents a ON a.id = t.agent_id AND t.kind = 'agent'
WHERE t.ticket_hash = $1 AND t.expires_at > now()
  AND (t.kind = 'human' OR (a.id IS NOT NULL AND a.deleted_at IS NULL))
"""


def _actor(row: asyncpg.Record, kind: str) -> Actor:
    return Actor(
        project_id=row["project_id"],
        project_slug=row["slug"],
        agent_id=row["agent_id"],
        alias=row["alias"] or "",
        human_name=row["human_name"] or "",
        role=row["role"] or "",
        granted_role=row["granted_role"] or "",
        credential=f"{kind}:{row['credential_id']}",
    )


async def resolve(hub: Hub, token: str | None) -> tuple[Actor, datetime | None]:
    """The caller a key or ticket names, and when its ticket expires."""
    if not token:
        raise unauthorized("missing credential: send Authorization: Bearer <api_key>")
    key = digest(token)
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and cached[0] > now:
        key_use.noted(hub, cached[1])
        return cached[1], cached[2]
    is_ticket = token.startswith(TICKET_PREFIX)
    row = await hub.store.fetchrow(_RESOLVE_TICKET if is_ticket else _RESOLVE_KEY, key)
    if row is None:
        _cache.pop(key, None)
        if is_ticket:
            raise unauthorized("invalid or expired ticket: sign in again")
        raise unauthorized("invalid api key")
    actor = _actor(row, "ticket" if is_ticket else "key")
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    expires = row["expires_at"]
    valid_until = now + CACHE_SECONDS
    _cache[key] = (valid_until, actor, expires)
    key_use.noted(hub, actor)
    return actor, expires


async def authenticate(hub: Hub, token: str | None) -> Actor:
    actor, expires = await resolve(hub, token)
    if expires is not None and expires.timestamp() <= time.time():
        _cache.pop(digest(token or ""), None)
        raise unauthorized("invalid or expired ticket: sign in again")
    return actor


def forget(agent_ids: Any = (), credentials: Any = (), project_id: str | None = None) -> None:
    """Drop cached credentials of these agents, these credentials or this
    whole project (revoked, deleted, signed out)."""
    agents = set(agent_ids)
    creds = set(credentials)
    for key, (_, actor, _exp) in list(_cache.items()):
        if (
            (actor.agent_id is not None and actor.agent_id in agents)
            or actor.credential in creds
            or (project_id is not None and actor.project_id == project_id)
        ):
            _cache.pop(key, None)


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
