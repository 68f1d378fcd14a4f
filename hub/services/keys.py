"""Api key management: list, rotate, revoke.

A human manages every key of the project; an agent may see, rotate and
revoke its own keys and no one else's. A revoked key is refused at once
on every instance, and the sessions it opened close (revocation.py).
"""

from __future__ import annotations

from typing import Any

from hub.services import auth, key_use, revocation
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from hub.services.events import change
from protocol.errors import forbidden, invalid_params, not_found

_COLUMNS = """k.id AS key_id, k.agent_id, a.alias, k.prefix, k.created_at, k.last_used_at,
k.revoked_at, k.revoked_by"""


def _view(row: Any) -> dict[str, Any]:
    return {
        "key_id": row["key_id"],
        "agent_id": row["agent_id"],
        "alias": row["alias"],
        "prefix": row["prefix"],
        "created_at": iso(row["created_at"]),
        "last_used_at": iso(row["last_used_at"]),
        "revoked_at": iso(row["revoked_at"]),
        "revoked_by": row["revoked_by"],
        "active": row["revoked_at"] is None,
    }


def _agent_scope(actor: Actor, agent_id: str | None) -> str | None:
    """Whose keys the caller may touch: a human any agent's (None: all),
    an agent only its own."""
    if actor.is_human:
        return agent_id
    if agent_id is not None and agent_id != actor.agent_id:
        raise forbidden("an agent manages only its own keys; a human manages the others'")
    return actor.agent_id


async def list_(hub: Hub, actor: Actor, agent_id: str | None = None) -> dict[str, Any]:
    scope = _agent_scope(actor, agent_id)
    # This instance's uses not written yet (others' are a minute at most).
    await key_use.flush(hub)
    rows = await hub.store.fetch(
        f"""
        SELECT {_COLUMNS} FROM api_keys k JOIN agents a ON a.id = k.agent_id
        WHERE k.project_id = $1 AND ($2::uuid IS NULL OR k.agent_id = $2::uuid)
        ORDER BY k.created_at DESC LIMIT 1000
        """,
        actor.project_id,
        scope,
    )
    return {"keys": [_view(r) for r in rows], "count": len(rows)}


def _uuid(value: str, what: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise invalid_params(f"{what} must be a uuid", field=what) from None


async def revoke(hub: Hub, actor: Actor, key_id: str) -> dict[str, Any]:
    """Revoke a key; announces ``key.revoked`` (to its agent and the
    humans) when it was still active, so every dashboard redraws it."""
    key_id = _uuid(key_id, "key_id")
    scope = _agent_scope(actor, None)
    async with change(hub, actor.project_id) as tx:
        active = await tx.conn.fetchval(
            """
            SELECT revoked_at IS NULL FROM api_keys
            WHERE id = $1::uuid AND project_id = $2 AND ($3::uuid IS NULL OR agent_id = $3::uuid)
            FOR UPDATE
            """,
            key_id,
            actor.project_id,
            scope,
        )
        if active is None:
            raise not_found(f"key {key_id} not found")
        row = await tx.conn.fetchrow(
            f"""
            UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, now()),
                   revoked_by = coalesce(k.revoked_by, $3)
            FROM agents a
            WHERE a.id = k.agent_id AND k.id = $1::uuid AND k.project_id = $2
            RETURNING {_COLUMNS}
            """,
            key_id,
            actor.project_id,
            actor.alias,
        )
        view = _view(row)
        if active:
            tx.emit("key.revoked", {**view, "by": actor.alias}, [view["agent_id"]])
    await revocation.announce(hub, actor.project_id, credentials=[f"key:{key_id}"])
    return view


async def rotate(hub: Hub, actor: Actor, agent_id: str | None = None) -> dict[str, Any]:
    """A new key for the agent (the caller itself, or any agent for a
    human); every other key of that agent is revoked. The new key is shown
    once; ``key.rotated`` tells the agent and the humans (its prefix only)."""
    if actor.is_human and agent_id is None:
        raise invalid_params("a human names the agent whose key to rotate (agent_id)")
    target = _agent_scope(actor, agent_id and _uuid(agent_id, "agent_id"))
    assert target is not None  # a human named one; an agent is one
    async with change(hub, actor.project_id) as tx:
        conn = tx.conn
        alias = await conn.fetchval(
            "SELECT alias FROM agents "
            "WHERE id = $1::uuid AND project_id = $2 AND deleted_at IS NULL",
            target,
            actor.project_id,
        )
        if alias is None:
            raise not_found(f"agent {target} not found")
        key = await auth.mint_key(conn, actor.project_id, target)
        old = await conn.fetch(
            """
            UPDATE api_keys SET revoked_at = now(), revoked_by = $3
            WHERE agent_id = $1::uuid AND project_id = $2 AND revoked_at IS NULL
              AND key_hash <> $4
            RETURNING id
            """,
            target,
            actor.project_id,
            actor.alias,
            auth.digest(key),
        )
        key_id = await conn.fetchval(
            "SELECT id FROM api_keys WHERE key_hash = $1", auth.digest(key)
        )
        revoked = [r["id"] for r in old]
        # Never the key itself: its prefix only, as keys.list shows it.
        announced = {"agent_id": target, "alias": alias, "key_id": key_id, "revoked": revoked}
        tx.emit(
            "key.rotated",
            {**announced, "prefix": key[: len(auth.KEY_PREFIX) + 6], "by": actor.alias},
            [target],
        )
    if revoked:
        await revocation.announce(
            hub, actor.project_id, credentials=[f"key:{k}" for k in revoked], reason="rotated"
        )
    return {"api_key": key, "key_id": key_id, "agent_id": target, "revoked": revoked}
