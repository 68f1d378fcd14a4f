"""What ``beadhub guard`` tells the hub: a commit or an edit that went
ahead over another agent's reservation because its author said so
(``BEADHUB_GUARD_OVERRIDE``). Recorded as a ``guard.override`` event, so
the team and the dashboard see who overrode whom, and why."""

from __future__ import annotations

from typing import Any

from hub.services import events
from hub.services.context import Actor, Hub
from hub.services.paths import parse
from protocol.errors import invalid_params

VIA = ("pre-commit", "pretooluse")


async def record_override(
    hub: Hub, actor: Actor, paths: list[str], holders: list[str], reason: str, via: str
) -> dict[str, Any]:
    """Agents only: the override names the caller as its author."""
    agent_id = actor.require_agent()
    if via not in VIA:
        raise invalid_params(f"via must be one of {', '.join(VIA)}", via=via)
    if not reason.strip():
        raise invalid_params("an override needs a reason")
    data = {
        "agent_id": agent_id,
        "alias": actor.alias,
        "paths": [parse(p).path for p in paths],
        "holders": holders,
        "reason": reason.strip(),
        "via": via,
    }
    await events.record(hub, actor.project_id, "guard.override", data)
    return {"recorded": True, **data}
