"""API keys: minted once, stored as a sha256 hash, resolved to an Actor.

Keys are 256-bit random tokens, so an unsalted fast hash is enough: there is
nothing to brute-force. They read ``aw_sk_`` + 43 characters because bdh
keeps a key only in that form (``aw_sk_`` and at least 38 characters); keys
minted earlier as ``bh_...`` keep working, since only the hash is looked up.

Resolved keys are cached for a few seconds because the HTTP shim
authenticates every request; revoking a key takes effect within that time.
"""

from __future__ import annotations

import hashlib
import secrets
import time

import asyncpg

from hub.services.context import Actor, Hub
from protocol.errors import unauthorized

KEY_PREFIX = "aw_sk_"
CACHE_SECONDS = 5.0
_CACHE_MAX = 10_000

_cache: dict[bytes, tuple[float, Actor]] = {}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def mint_key(conn: asyncpg.Connection, project_id: str, agent_id: str | None) -> str:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_keys (project_id, agent_id, key_hash, prefix) VALUES ($1, $2, $3, $4)",
        project_id,
        agent_id,
        _digest(key),
        key[:10],
    )
    return key


_RESOLVE = """
SELECT k.project_id, p.slug, a.id AS agent_id, a.alias, a.human_name, a.role
FROM api_keys k
JOIN projects p ON p.id = k.project_id
LEFT JOIN agents a ON a.id = k.agent_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL
  AND (k.agent_id IS NULL OR a.deleted_at IS NULL)
"""


async def authenticate(hub: Hub, key: str | None) -> Actor:
    if not key:
        raise unauthorized("missing api key: send Authorization: Bearer <api_key>")
    digest = _digest(key)
    cached = _cache.get(digest)
    now = time.monotonic()
    if cached is not None and cached[0] > now:
        return cached[1]
    row = await hub.store.fetchrow(_RESOLVE, digest)
    if row is None:
        _cache.pop(digest, None)
        raise unauthorized("invalid api key")
    actor = Actor(
        project_id=row["project_id"],
        project_slug=row["slug"],
        agent_id=row["agent_id"],
        alias=row["alias"] or "",
        human_name=row["human_name"] or "",
        role=row["role"] or "",
    )
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[digest] = (now + CACHE_SECONDS, actor)
    return actor


def forget(actor_agent_id: str) -> None:
    """Drop cached keys of an agent (deleted, renamed)."""
    for digest, (_, actor) in list(_cache.items()):
        if actor.agent_id == actor_agent_id:
            _cache.pop(digest, None)


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
