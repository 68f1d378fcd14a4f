from __future__ import annotations

from typing import Any

from hub.services import events, presence, projects, status
from hub.transport.rpc import Call, method
from protocol.errors import invalid_params
from protocol.methods.session import (
    EventsSince,
    PresenceList,
    PresenceUpdate,
    SessionSubscribe,
)
from protocol.schema import NoParams


@method("session.whoami")
async def whoami(call: Call, params: NoParams) -> dict[str, Any]:
    result = await projects.whoami(call.hub, call.actor)
    if call.session is not None:
        result["session_id"] = call.session.id
    return result


@method("session.ping")
async def ping(call: Call, params: NoParams) -> dict[str, Any]:
    return {"pong": True}


@method("session.subscribe")
async def subscribe(call: Call, params: SessionSubscribe) -> dict[str, Any]:
    if call.session is None:
        raise invalid_params("session.subscribe needs a WebSocket session")
    return {"events": call.session.subscribe(params.events)}


@method("presence.list")
async def presence_list(call: Call, params: PresenceList) -> dict[str, Any]:
    agents = await presence.list_agents(
        call.hub, call.actor.project_id, online_only=params.online_only
    )
    return {"agents": agents}


@method("presence.update")
async def presence_update(call: Call, params: PresenceUpdate) -> dict[str, Any]:
    return {"agent": await presence.update(call.hub, call.actor, params.model_dump())}


@method("status.get")
async def status_get(call: Call, params: NoParams) -> dict[str, Any]:
    return await status.get(call.hub, call.actor)


@method("events.since")
async def events_since(call: Call, params: EventsSince) -> dict[str, Any]:
    await events.require_resumable(call.hub, call.actor.project_id, params.cursor)
    found = await events.since(
        call.hub, call.actor.project_id, call.actor.agent_id, params.cursor, params.limit
    )
    return {"events": [e.wire() for e in found], "has_more": len(found) >= params.limit}
