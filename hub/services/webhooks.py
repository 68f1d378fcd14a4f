"""Outgoing webhooks: tell a human outside the page.

A human configures, per project, URLs that receive a POST when an agent
escalates, when an escalation expires unanswered, and when an agent writes
in a chat with a human. The body is a Slack-style incoming-hook message
(``{"text": ...}``, so a Slack or Mattermost incoming-webhook URL works as
is) plus a ``beadhub`` object with the event for other receivers. Each POST
carries ``X-BeadHub-Signature: sha256=<hex>``, the HMAC-SHA256 of the raw
body under the hook's secret, and ``X-BeadHub-Delivery`` (the same id on
every retry, so a receiver can drop repeats).

Delivery runs after the change committed, in a task of the instance that
made it, so the caller never waits for a receiver. A failed attempt
(connection error, timeout, 429 or 5xx) is retried with exponential
backoff; another 4xx is final. Each (hook, event) is a ``webhook_deliveries``
row that says how it ended.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson

from hub.services import background, humans
from hub.services.clock import iso
from hub.services.context import Actor, Hub
from protocol.errors import invalid_params, not_found

logger = logging.getLogger("beadhub.webhooks")

EVENTS = ("escalation.created", "escalation.expired", "chat.human")
MAX_HOOKS = 20
MAX_ATTEMPTS = 5
#: Seconds before attempt 2, 3, ...: doubled each time.
FIRST_BACKOFF_SECONDS = 0.5
TIMEOUT_SECONDS = 10.0
USER_AGENT = "BeadHub-Webhooks/1"

_tasks: dict[int, set[asyncio.Task[None]]] = {}


def _view(row: Any, secret: str | None = None) -> dict[str, Any]:
    hook = {
        "webhook_id": row["id"],
        "url": row["url"],
        "events": list(row["events"]),
        "created_by": row["created_by"],
        "created_at": iso(row["created_at"]),
        # The secret is shown once, when the hook is made.
        "secret_hint": row["secret"][:6] + "…",
    }
    if secret is not None:
        hook["secret"] = secret
    return hook


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid_params("url must be an http:// or https:// address", field="url")
    return url


async def create(
    hub: Hub, actor: Actor, url: str, events: list[str] | None = None, secret: str | None = None
) -> dict[str, Any]:
    humans.require_human(actor, "configure webhooks")
    wanted = list(dict.fromkeys(events or EVENTS))
    unknown = [e for e in wanted if e not in EVENTS]
    if unknown:
        raise invalid_params(f"unknown event {unknown[0]!r}: one of {', '.join(EVENTS)}")
    secret = secret or "whs_" + secrets.token_urlsafe(24)
    row = await hub.store.fetchrow(
        """
        INSERT INTO webhooks (project_id, url, secret, events, created_by)
        SELECT $1, $2, $3, $4, $5
        WHERE (SELECT count(*) FROM webhooks WHERE project_id = $1) < $6
        RETURNING id, url, secret, events, created_by, created_at
        """,
        actor.project_id,
        _check_url(url),
        secret,
        wanted,
        actor.human_name or actor.alias,
        MAX_HOOKS,
    )
    if row is None:
        raise invalid_params(f"a project has at most {MAX_HOOKS} webhooks")
    return _view(row, secret)


async def list_(hub: Hub, actor: Actor) -> dict[str, Any]:
    humans.require_human(actor, "see webhooks")
    rows = await hub.store.fetch(
        """
        SELECT w.id, w.url, w.secret, w.events, w.created_by, w.created_at,
               d.status AS last_status, d.attempts AS last_attempts,
               d.last_status AS last_http_status, d.last_error, d.created_at AS last_at
        FROM webhooks w
        LEFT JOIN LATERAL (
            SELECT * FROM webhook_deliveries d WHERE d.webhook_id = w.id
            ORDER BY d.created_at DESC LIMIT 1
        ) d ON true
        WHERE w.project_id = $1 ORDER BY w.created_at
        """,
        actor.project_id,
    )
    hooks = []
    for row in rows:
        hook = _view(row)
        hook["last_delivery"] = (
            None
            if row["last_status"] is None
            else {
                "status": row["last_status"],
                "attempts": row["last_attempts"],
                "http_status": row["last_http_status"],
                "error": row["last_error"],
                "at": iso(row["last_at"]),
            }
        )
        hooks.append(hook)
    return {"webhooks": hooks, "count": len(hooks), "events": list(EVENTS)}


async def delete(hub: Hub, actor: Actor, webhook_id: str) -> dict[str, Any]:
    humans.require_human(actor, "remove webhooks")
    try:
        wid = str(uuid.UUID(webhook_id))
    except ValueError:
        raise not_found(f"no webhook {webhook_id!r}") from None
    status = await hub.store.execute(
        "DELETE FROM webhooks WHERE id = $1 AND project_id = $2", wid, actor.project_id
    )
    if status != "DELETE 1":
        raise not_found(f"no webhook {webhook_id!r} in this project", webhook_id=webhook_id)
    return {"webhook_id": wid, "deleted": True}


# -- delivery -----------------------------------------------------------------------


def _text(event: str, data: dict[str, Any]) -> str:
    if event == "escalation.created":
        return f"{data['alias']} escalates: {data['subject']}"
    if event == "escalation.expired":
        return f"Escalation from {data['alias']} expired unanswered: {data['subject']}"
    return f"{data['from_alias']} → {', '.join(data.get('to', []))}: {data['body'][:500]}"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def notify(hub: Hub, project_id: str, event: str, data: dict[str, Any]) -> None:
    """Queue a POST of ``event`` to each of the project's hooks that wants
    it; returns at once (a project without hooks costs one indexed read)."""
    rows = await hub.store.fetch(
        """
        WITH h AS (SELECT id, url, secret FROM webhooks WHERE project_id = $1 AND $2 = ANY(events))
        INSERT INTO webhook_deliveries (webhook_id, project_id, event_type)
        SELECT id, $1, $2 FROM h
        RETURNING id, webhook_id, (SELECT url FROM h WHERE h.id = webhook_id) AS url,
                  (SELECT secret FROM h WHERE h.id = webhook_id) AS secret
        """,
        project_id,
        event,
    )
    if not rows:
        return
    payload = {
        "text": _text(event, data),
        "beadhub": {"event": event, "project_id": project_id, "data": data, "sent_at": time.time()},
    }
    body = orjson.dumps(payload)
    tasks = _tasks.setdefault(id(hub), set())
    for row in rows:
        background.spawn(_deliver(hub, row, event, body), tasks)


async def _deliver(hub: Hub, row: Any, event: str, body: bytes) -> None:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-BeadHub-Event": event,
        "X-BeadHub-Delivery": str(row["id"]),
        "X-BeadHub-Signature": signature(row["secret"], body),
    }
    delay = FIRST_BACKOFF_SECONDS
    status, error, outcome = None, None, "failed"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        headers["X-BeadHub-Attempt"] = str(attempt)
        status, error = await asyncio.to_thread(_post, row["url"], body, headers)
        retry = status is None or status == 429 or status >= 500
        if status is not None and 200 <= status < 300:
            outcome = "delivered"
        final = not retry or attempt == MAX_ATTEMPTS
        await _record(hub, row["id"], attempt, status, error, outcome, final=final)
        if final:
            break
        await asyncio.sleep(delay)
        delay *= 2
    if outcome != "delivered":
        logger.warning("webhook %s gave up on %s: %s %s", row["webhook_id"], event, status, error)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return int(response.status), None
    except urllib.error.HTTPError as exc:
        return int(exc.code), f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return None, str(exc)[:500]


async def _record(
    hub: Hub,
    delivery_id: str,
    attempts: int,
    status: int | None,
    error: str | None,
    outcome: str,
    final: bool,
) -> None:
    await hub.store.execute(
        """
        UPDATE webhook_deliveries
        SET attempts = $2, last_status = $3, last_error = $4,
            status = CASE WHEN $5 = 'delivered' OR $6 THEN $5 ELSE status END,
            finished_at = CASE WHEN $5 = 'delivered' OR $6 THEN now() END
        WHERE id = $1
        """,
        delivery_id,
        attempts,
        status,
        error,
        outcome,
        final,
    )


async def stop(hub: Hub) -> None:
    """Cancel this hub's deliveries under way (shutdown)."""
    await background.stop(tasks=_tasks.pop(id(hub), set()))
