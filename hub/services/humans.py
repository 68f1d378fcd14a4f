"""Humans as mail and chat parties.

A human signs in on the dashboard (today: a browser ticket with a
``human_name``) and acts with ``Actor.agent_id`` None. To receive mail and
take part in chats, each human of a project gets one *inbox row* in
``agents`` whose alias is ``human:<name>``: an agent alias can never hold a
colon (``protocol.schema.ALIAS_RE``), so the prefix cannot be forged, and
mail deliveries, chat participants, read receipts and send-and-wait work
for humans exactly as for agents. The row holds no api key and never comes
online; the team listings leave it out (:data:`NOT_HUMAN_SQL`).

Known humans of a project: the ``human_name`` of any of its agents and of
any browser ticket issued for it. Addressing ``human:<name>`` (or the bare
name of a known human that is not an agent's alias) creates the row on
first use.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from hub.services.context import Actor, Hub
from protocol.errors import forbidden, not_found

PREFIX = "human:"
#: The SQL condition that keeps an ``agents a`` row a real agent.
NOT_HUMAN_SQL = "a.alias NOT LIKE 'human:%'"

_KNOWN = """
SELECT name FROM (
    SELECT human_name AS name FROM agents
    WHERE project_id = $1 AND deleted_at IS NULL AND alias NOT LIKE 'human:%'
    UNION
    SELECT human_name FROM browser_tickets WHERE project_id = $1
    UNION
    SELECT substr(alias, 7) FROM agents WHERE project_id = $1 AND alias LIKE 'human:%'
) n WHERE name = ANY($2::text[]) AND name <> ''
"""

_ENSURE = """
INSERT INTO agents (project_id, alias, human_name, role, agent_type)
SELECT $1, 'human:' || n, n, 'human', 'human' FROM unnest($2::text[]) n
ON CONFLICT (project_id, alias) DO NOTHING
"""

_IDS = """
SELECT alias, id FROM agents
WHERE project_id = $1 AND alias = ANY($2::text[]) AND deleted_at IS NULL
"""


def is_human_alias(alias: str) -> bool:
    return alias.startswith(PREFIX)


def alias_of(name: str) -> str:
    return PREFIX + name


async def resolve(hub: Hub, project_id: str, names: Iterable[str]) -> dict[str, str]:
    """``human:<name>`` aliases (or bare names of known humans) -> the
    aliases to send to; each human's inbox row is created on first use.
    Names that are neither are left out (the caller reports them)."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    bare = [n[len(PREFIX) :] if is_human_alias(n) else n for n in wanted]
    async with hub.store.connection() as conn:
        known = {r["name"] for r in await conn.fetch(_KNOWN, project_id, bare)}
        if known:
            await conn.execute(_ENSURE, project_id, sorted(known))
    return {w: alias_of(b) for w, b in zip(wanted, bare, strict=True) if b in known}


async def inbox_id(hub: Hub, actor: Actor) -> str:
    """The signed-in human's inbox row (created on first use)."""
    if not actor.is_human:
        raise forbidden("this call is for a human on the dashboard, not an agent's key")
    alias = alias_of(actor.human_name or actor.alias.removeprefix(PREFIX))
    async with hub.store.connection() as conn:
        return await _ensure_one(conn, actor.project_id, alias)


async def _ensure_one(conn: asyncpg.Connection, project_id: str, alias: str) -> str:
    await conn.execute(_ENSURE, project_id, [alias[len(PREFIX) :]])
    row = await conn.fetchrow(_IDS, project_id, [alias])
    if row is None:
        raise not_found(f"no human {alias!r} in this project", alias=alias)
    return str(row["id"])


def require_human(actor: Actor, what: str) -> None:
    """Human-only actions: an agent's key is refused whatever its role."""
    if not actor.is_human:
        raise forbidden(f"only a human on the dashboard may {what}")
