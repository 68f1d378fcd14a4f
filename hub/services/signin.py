"""Human credentials, which no agent key can mint.

- The operator token: made by each ``beadhub serve`` at start-up (printed
  as a sign-in link when the hub runs in a terminal, as Jupyter prints its
  token, and written to ``<data dir>/operator-token``, readable only by the
  user running the hub, for the ``beadhub`` CLI on the hub host). It signs
  in as a human of any project.
- Sign-in links: one-time tokens for one project and one human, made by
  the operator (``beadhub signin``) or by a signed-in human inviting
  another; they expire after 15 minutes by default.

Both are traded (``POST /v1/auth/signin``) for a human browser ticket
(hub.services.tickets), the only credential that acts as a human.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hub.config import Settings
from hub.services import audit, auth, tickets
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from protocol.errors import invalid_params, not_found, unauthorized

logger = logging.getLogger("beadhub")

OPERATOR_PREFIX = "bho_"
LINK_PREFIX = "bhl_"
OPERATOR_TTL_SECONDS = 30 * 86400
LINK_TTL_SECONDS = 15 * 60
TOKEN_FILE = "operator-token"


def sign_in_url(base_url: str, token: str) -> str:
    """A dashboard link; the token rides in the fragment, which browsers
    never send to a server."""
    return f"{base_url.rstrip('/')}/#signin={token}"


def base_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def announce_operator(settings: Settings, token: str) -> None:
    """``beadhub serve``'s start-up: the token goes to a file only the
    hub's user can read, and the sign-in link to the terminal. Not to a
    log: when stderr is not a terminal (a service manager, a log file),
    only where to find it is printed."""
    path = write_token_file(settings.data_dir, token)
    if sys.stderr.isatty():
        # To the person at the terminal, not through logging: a log handler
        # could send it anywhere.
        link = sign_in_url(base_url(settings), token)
        print(f"\n  operator sign-in (any project): {link}\n", file=sys.stderr, flush=True)
    else:
        logger.info(
            "operator sign-in: run `beadhub signin --project <slug> --human <name>` on this "
            "host (operator token in %s)",
            path,
        )


async def create_operator_token(hub: Hub) -> str:
    token = auth.new_secret(OPERATOR_PREFIX)
    await hub.store.execute(
        """
        INSERT INTO human_tokens (token_hash, kind, created_by, expires_at)
        VALUES ($1, 'operator', $2, now() + make_interval(secs => $3))
        """,
        auth.digest(token),
        f"instance {hub.settings.instance_id}",
        float(OPERATOR_TTL_SECONDS),
    )
    return token


def write_token_file(data_dir: Path, token: str) -> Path:
    """Only the user running the hub can read it: being able to is what
    "on the hub host" means for the CLI."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def read_token_file(data_dir: Path, required: bool = True) -> str:
    path = data_dir / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not required:
            return ""
        raise SystemExit(
            f"no operator token at {path}: run this on the hub's host, with the hub's "
            "--data-dir, while `beadhub serve` is running"
        ) from None


async def is_operator(hub: Hub, token: str | None) -> bool:
    if not token or not token.startswith(OPERATOR_PREFIX):
        return False
    found = await hub.store.fetchval(
        "SELECT 1 FROM human_tokens WHERE token_hash = $1 AND kind = 'operator' "
        "AND expires_at > now()",
        auth.digest(token),
    )
    return found is not None


async def _project(hub: Hub, slug: str) -> dict[str, Any]:
    row = await hub.store.fetchrow("SELECT id, slug FROM projects WHERE slug = $1", slug)
    if row is None:
        raise not_found(f"project {slug!r} not found")
    return dict(row)


async def create_link(
    hub: Hub,
    *,
    human_name: str,
    actor: Actor | None = None,
    operator_token: str | None = None,
    project_slug: str = "",
    ttl_seconds: int = LINK_TTL_SECONDS,
) -> dict[str, Any]:
    """A one-time sign-in link for ``human_name``: from a signed-in human
    (for their own project) or from the operator (for any project)."""
    if actor is not None:
        actor.require_human("invite a human")
        project = {"id": actor.project_id, "slug": actor.project_slug}
        by = actor.alias
    elif await is_operator(hub, operator_token):
        project = await _project(hub, project_slug)
        by = "operator"
    else:
        raise unauthorized("only a signed-in human or the hub's operator may make sign-in links")
    name = human_name.strip()
    if not name:
        raise invalid_params("human_name is required")
    token = auth.new_secret(LINK_PREFIX)
    expires_at = await hub.store.fetchval(
        """
        INSERT INTO human_tokens (token_hash, kind, project_id, human_name, created_by,
                                  expires_at)
        VALUES ($1, 'link', $2, $3, $4, now() + make_interval(secs => $5))
        RETURNING expires_at
        """,
        auth.digest(token),
        project["id"],
        name,
        by,
        float(ttl_seconds),
    )
    if actor is None:
        await audit.record(
            hub,
            None,
            "auth.link",
            target=name,
            who="operator",
            project_id=project["id"],
            project_slug=project["slug"],
        )
    return {
        "token": token,
        "project_slug": project["slug"],
        "human_name": name,
        "expires_at": iso(expires_at),
    }


async def sign_in(
    hub: Hub, token: str, project_slug: str = "", human_name: str = ""
) -> dict[str, Any]:
    """Trade a human credential for a human ticket. A link is spent at
    once (one use). The operator token names no project: without
    ``project_slug`` the answer lists the projects to choose from."""
    if token.startswith(LINK_PREFIX):
        row = await hub.store.fetchrow(
            """
            UPDATE human_tokens t SET used_at = now()
            FROM projects p
            WHERE t.token_hash = $1 AND t.kind = 'link' AND t.used_at IS NULL
              AND t.expires_at > now() AND p.id = t.project_id
            RETURNING p.id, p.slug, t.human_name
            """,
            auth.digest(token),
        )
        if row is None:
            raise unauthorized("this sign-in link is unknown, used or expired: ask for a new one")
        project, name = {"id": row["id"], "slug": row["slug"]}, row["human_name"]
    elif await is_operator(hub, token):
        if not project_slug:
            rows = await hub.store.fetch("SELECT slug FROM projects ORDER BY slug LIMIT 1000")
            return {"choose_project": True, "projects": [r["slug"] for r in rows]}
        project, name = await _project(hub, project_slug), human_name.strip() or "operator"
    else:
        raise unauthorized("not a sign-in link or operator token")
    async with hub.store.connection() as conn:
        ticket = await tickets.issue_for_human(conn, project, name)
    await audit.record(
        hub,
        None,
        "auth.signin",
        target=name,
        who=f"human:{name}",
        project_id=project["id"],
        project_slug=project["slug"],
        detail={"with": "link" if token.startswith(LINK_PREFIX) else "operator"},
    )
    return ticket
