from __future__ import annotations

from typing import Any

from hub.services import conversations, stats, unstick
from hub.transport.rpc import Call, method
from protocol.methods.team import ChatAll, ClaimsReassign, StatsGet, TeamStale, TeamWaiting


@method("chat.all")
async def chat_all(call: Call, params: ChatAll) -> dict[str, Any]:
    return await conversations.all_sessions(call.hub, call.actor, params.limit)


@method("team.waiting")
async def waiting(call: Call, params: TeamWaiting) -> dict[str, Any]:
    return await conversations.waiting(call.hub, call.actor)


@method("team.stale")
async def stale(call: Call, params: TeamStale) -> dict[str, Any]:
    return await unstick.stale(call.hub, call.actor)


@method("claims.reassign")
async def reassign(call: Call, params: ClaimsReassign) -> dict[str, Any]:
    return await unstick.reassign(call.hub, call.actor, params.bead_id, params.to)


@method("stats.get")
async def stats_get(call: Call, params: StatsGet) -> dict[str, Any]:
    return await stats.get(call.hub, call.actor, params.hours)
