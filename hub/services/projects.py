"""Projects and onboarding: ``init`` creates (or reuses) a project, its repo
and an agent, and mints the agent's api key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from hub.services import auth, repos
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from hub.services.events import change
from protocol.errors import conflict, invalid_params, not_found
from protocol.schema import ALIAS_RE, SLUG_RE

#: First names handed out as aliases, in order; a role makes them
#: ``alice-frontend``. After these run out, numbers are appended.
ALIAS_NAMES = [
    "alice",
    "bob",
    "carol",
    "dave",
    "eve",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "karl",
    "lena",
    "mallory",
    "nina",
    "oscar",
    "peggy",
    "quinn",
    "rupert",
    "sybil",
    "trent",
    "ursula",
    "victor",
    "wendy",
    "xavier",
    "yara",
    "zoe",
]


@dataclass(slots=True)
class InitRequest:
    project_slug: str = ""
    project_name: str = ""
    repo_origin: str = ""
    alias: str | None = None
    human_name: str = ""
    role: str = ""
    email: str = ""
    hostname: str = ""
    workspace_path: str = ""
    agent_type: str = "agent"
    program: str = ""
    model: str = ""


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return slug[:64] or "default"


async def ensure_project(
    conn: asyncpg.Connection, slug: str, name: str = ""
) -> tuple[dict[str, Any], bool]:
    if not SLUG_RE.match(slug):
        raise invalid_params(
            f"invalid project slug {slug!r}: lower-case letters, digits, '.', '_' or '-'"
        )
    row = await conn.fetchrow(
        """
        INSERT INTO projects (slug, name) VALUES ($1, $2)
        ON CONFLICT (slug) DO NOTHING
        RETURNING id, slug, name, created_at
        """,
        slug,
        name or slug,
    )
    if row is not None:
        return dict(row), True
    row = await conn.fetchrow(
        "SELECT id, slug, name, created_at FROM projects WHERE slug = $1", slug
    )
    assert row is not None
    return dict(row), False


async def suggest_alias(conn: asyncpg.Connection, project_id: str, role: str = "") -> str:
    taken = {
        r["alias"]
        for r in await conn.fetch("SELECT alias FROM agents WHERE project_id = $1", project_id)
    }
    suffix = f"-{slugify(role)}" if role else ""
    for round_ in range(1, 1000):
        for name in ALIAS_NAMES:
            candidate = f"{name}{suffix}" if round_ == 1 else f"{name}{round_}{suffix}"
            if candidate not in taken:
                return candidate
    raise conflict("no free alias left in this project")


def name_prefix(alias: str) -> str:
    return alias.split("-", 1)[0]


async def init(hub: Hub, req: InitRequest) -> dict[str, Any]:
    """Onboard one agent. Reusing an alias is allowed only from the same
    workspace (hostname and path), so an unauthenticated call cannot take
    over another agent's identity."""
    slug = req.project_slug or (
        slugify(repos.repo_name(repos.canonical_origin(req.repo_origin))) if req.repo_origin else ""
    )
    if not slug:
        raise invalid_params("project_slug or repo_origin is required")
    if req.alias is not None and not ALIAS_RE.match(req.alias):
        raise invalid_params(f"invalid alias {req.alias!r}: letters, digits, '.', '_' or '-'")
    for _attempt in range(5):
        try:
            return await _init_once(hub, slug, req)
        except asyncpg.UniqueViolationError:
            if req.alias is not None:
                raise
            # Another init took the suggested alias at the same moment.
    raise conflict("could not allocate an alias, try again")


async def _init_once(hub: Hub, slug: str, req: InitRequest) -> dict[str, Any]:
    project: dict[str, Any] | None = None
    # The project may not exist yet: its id is known inside the transaction.
    async with change(hub, project_id="") as tx:
        project, _ = await ensure_project(tx.conn, slug, req.project_name)
        tx.project_id = project["id"]
        repo = None
        if req.repo_origin:
            repo, _ = await repos.ensure(tx.conn, project["id"], req.repo_origin)
        alias = req.alias or await suggest_alias(tx.conn, project["id"], req.role)
        existing = await tx.conn.fetchrow(
            "SELECT id, hostname, workspace_path, deleted_at FROM agents "
            "WHERE project_id = $1 AND alias = $2 FOR UPDATE",
            project["id"],
            alias,
        )
        if existing is not None:
            same_place = (existing["hostname"], existing["workspace_path"]) == (
                req.hostname,
                req.workspace_path,
            )
            if not same_place and existing["deleted_at"] is None:
                raise conflict(
                    f"alias {alias!r} is taken in project {slug!r}; choose another alias",
                    alias=alias,
                )
            agent_id = existing["id"]
            await tx.conn.execute(
                """
                UPDATE agents SET deleted_at = NULL, hostname = $2, workspace_path = $3,
                       human_name = coalesce(nullif($4, ''), human_name),
                       role = coalesce(nullif($5, ''), role),
                       repo_id = coalesce($6, repo_id)
                WHERE id = $1
                """,
                agent_id,
                req.hostname,
                req.workspace_path,
                req.human_name,
                req.role,
                repo["id"] if repo else None,
            )
            created = False
        else:
            agent_id = await tx.conn.fetchval(
                """
                INSERT INTO agents (project_id, repo_id, alias, human_name, email, role,
                                    agent_type, hostname, workspace_path, program, model, repo)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                RETURNING id
                """,
                project["id"],
                repo["id"] if repo else None,
                alias,
                req.human_name,
                req.email,
                req.role,
                req.agent_type or "agent",
                req.hostname,
                req.workspace_path,
                req.program,
                req.model,
                repo["name"] if repo else "",
            )
            created = True
        key = await auth.mint_key(tx.conn, project["id"], agent_id)
        created_at = await tx.conn.fetchval("SELECT created_at FROM agents WHERE id = $1", agent_id)
        tx.emit(
            "agent.registered",
            {"agent_id": agent_id, "alias": alias, "human_name": req.human_name, "role": req.role},
        )
    assert project is not None
    return {
        "status": "ok",
        "created_at": iso(created_at),
        "api_key": key,
        "project_id": project["id"],
        "project_slug": project["slug"],
        "agent_id": agent_id,
        "workspace_id": agent_id,
        "repo_id": repo["id"] if repo else None,
        "canonical_origin": repo["canonical_origin"] if repo else None,
        "alias": alias,
        "human_name": req.human_name,
        "created": created,
        "workspace_created": created,
    }


async def get(hub: Hub, project_id: str) -> dict[str, Any]:
    row = await hub.store.fetchrow(
        "SELECT id, slug, name, created_at FROM projects WHERE id = $1", project_id
    )
    if row is None:
        raise not_found("project not found")
    return {
        "project_id": row["id"],
        "slug": row["slug"],
        "name": row["name"],
        "created_at": iso(row["created_at"]),
    }


async def whoami(hub: Hub, actor: Actor) -> dict[str, Any]:
    return {
        "project_id": actor.project_id,
        "project_slug": actor.project_slug,
        "agent_id": actor.agent_id,
        "workspace_id": actor.agent_id,
        "alias": actor.alias,
        "human_name": actor.human_name,
        "role": actor.role,
        "instance_id": hub.settings.instance_id,
    }
