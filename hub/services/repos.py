"""Repositories, known by their canonical git origin.

``git@github.com:o/r.git``, ``ssh://git@github.com/o/r`` and
``https://github.com/o/r`` are all ``github.com/o/r``: the host in lower
case, no user, no port, no ``.git``, no trailing slash.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from hub.services.context import Hub
from protocol.errors import invalid_params, not_found

_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>(?!//).+)$")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://(?:[^@/]+@)?(?P<host>[^/:]+)(?::\d+)?/(?P<path>.+)$", re.I)


def canonical_origin(origin: str) -> str:
    text = origin.strip()
    match = _URL.match(text) or _SCP_LIKE.match(text)
    if match is None:
        # A local path or a bare name: keep it, normalised.
        path = text.rstrip("/")
        if path.endswith(".git"):
            path = path[:-4]
        if not path:
            raise invalid_params("repo origin is empty")
        return path
    host = match.group("host").lower()
    path = match.group("path").strip("/")
    if path.endswith(".git"):
        path = path[:-4]
    if not path or ".." in path.split("/"):
        raise invalid_params(f"cannot read a repository path from origin {origin!r}")
    return f"{host}/{path}"


def repo_name(canonical: str) -> str:
    return canonical.rstrip("/").rsplit("/", 1)[-1]


async def ensure(
    conn: asyncpg.Connection, project_id: str, origin: str
) -> tuple[dict[str, Any], bool]:
    """Create or find the project's repo for ``origin``; (repo, created)."""
    canonical = canonical_origin(origin)
    row = await conn.fetchrow(
        """
        INSERT INTO repos (project_id, canonical_origin, name) VALUES ($1, $2, $3)
        ON CONFLICT (project_id, canonical_origin) DO NOTHING
        RETURNING id, canonical_origin, name
        """,
        project_id,
        canonical,
        repo_name(canonical),
    )
    if row is not None:
        return dict(row), True
    row = await conn.fetchrow(
        "SELECT id, canonical_origin, name FROM repos "
        "WHERE project_id = $1 AND canonical_origin = $2",
        project_id,
        canonical,
    )
    assert row is not None
    return dict(row), False


async def lookup(hub: Hub, origin: str, project_id: str | None = None) -> dict[str, Any]:
    canonical = canonical_origin(origin)
    row = await hub.store.fetchrow(
        """
        SELECT r.id AS repo_id, r.project_id, p.slug AS project_slug, r.canonical_origin, r.name
        FROM repos r JOIN projects p ON p.id = r.project_id
        WHERE r.canonical_origin = $1 AND ($2::uuid IS NULL OR r.project_id = $2)
        ORDER BY r.created_at LIMIT 1
        """,
        canonical,
        project_id,
    )
    if row is None:
        raise not_found(f"no repo with origin {canonical}")
    return dict(row)
