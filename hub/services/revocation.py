"""Revocation reaches what is open: on every instance, the sessions a
revoked key, a deleted agent, a signed-out ticket or a deleted project
opened are closed, and the auth cache forgets them.

The store is the record (the key's ``revoked_at``, the agent's
``deleted_at``, the ticket's row); the bus carries a doorbell on one
hub-wide channel that every instance listens to from start-up. If the bus
may have lost a doorbell (Redis restarted), each instance re-checks every
session it holds against the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hub.services import auth, background
from hub.services.context import Actor, Hub

logger = logging.getLogger("beadhub.revocation")

CHANNEL = "auth"
TYPE = "auth.revoked"


@dataclass(eq=False, slots=True)
class Watch:
    """One open session and how to end it."""

    hub: Hub
    actor: Actor
    close: Callable[[str], None]
    expiry: asyncio.TimerHandle | None = field(default=None)


_watches: set[Watch] = set()
_rechecks: set[asyncio.Task[None]] = set()


def watch(
    hub: Hub, actor: Actor, close: Callable[[str], None], expires_at: float | None = None
) -> Callable[[], None]:
    """Register an open session; ``close(reason)`` ends it. A ticket's
    session also ends when the ticket expires. Returns the unregister."""
    entry = Watch(hub, actor, close)
    if expires_at is not None:
        delay = max(0.0, expires_at - time.time())
        entry.expiry = background.later(delay, close, "ticket expired")
    _watches.add(entry)

    def unwatch() -> None:
        _watches.discard(entry)
        if entry.expiry is not None:
            entry.expiry.cancel()

    return unwatch


def _matches(actor: Actor, message: dict[str, Any]) -> bool:
    if message.get("project") and actor.project_id == message.get("project_id"):
        return True
    if actor.agent_id is not None and actor.agent_id in message.get("agent_ids", ()):
        return True
    return actor.credential in message.get("credentials", ())


def on_message(message: dict[str, Any]) -> None:
    if message.get("type") != TYPE:
        return
    auth.forget(
        message.get("agent_ids", ()),
        message.get("credentials", ()),
        message["project_id"] if message.get("project") else None,
    )
    for entry in list(_watches):
        if _matches(entry.actor, message):
            entry.close(message.get("reason") or "revoked")


async def announce(
    hub: Hub,
    project_id: str,
    *,
    agent_ids: Iterable[str] = (),
    credentials: Iterable[str] = (),
    project: bool = False,
    reason: str = "revoked",
) -> None:
    """Call after the revocation committed."""
    message = {
        "type": TYPE,
        "id": str(uuid.uuid4()),
        "project_id": project_id,
        "agent_ids": [str(a) for a in agent_ids],
        "credentials": list(credentials),
        "project": project,
        "reason": reason,
    }
    await hub.relay.publish(CHANNEL, message)


def _on_gap(hub: Hub) -> Callable[[float], None]:
    def on_gap(seconds: float) -> None:
        background.spawn(recheck(hub), _rechecks)

    return on_gap


async def recheck(hub: Hub) -> None:
    """Close this instance's sessions whose credential no longer resolves."""
    for entry in [w for w in _watches if w.hub is hub]:
        still = await hub.store.fetchval(_STILL_VALID, *_credential_id(entry.actor))
        if not still:
            entry.close("revoked")


_STILL_VALID = """
SELECT CASE WHEN $1 = 'key' THEN EXISTS (
    SELECT 1 FROM api_keys k JOIN agents a ON a.id = k.agent_id
    WHERE k.id = $2::uuid AND k.revoked_at IS NULL AND a.deleted_at IS NULL)
ELSE EXISTS (
    SELECT 1 FROM browser_tickets t LEFT JOIN agents a ON a.id = t.agent_id
    WHERE t.id = $2::uuid AND t.expires_at > now()
      AND (t.kind = 'human' OR a.deleted_at IS NULL)) END
"""


def _credential_id(actor: Actor) -> tuple[str, str]:
    kind, _, ident = actor.credential.partition(":")
    return kind, ident


def _listener(message: dict[str, Any]) -> None:
    on_message(message)


async def start(hub: Hub) -> None:
    await hub.relay.add(CHANNEL, _listener, on_gap=_on_gap(hub))


async def stop(hub: Hub) -> None:
    await hub.relay.remove(CHANNEL, _listener)
