from __future__ import annotations

from typing import Any

from hub.services import escalations
from hub.transport.rpc import Call, method
from protocol.methods.escalations import (
    EscalationCreate,
    EscalationGet,
    EscalationList,
    EscalationRespond,
    EscalationWait,
)


@method("escalations.create")
async def create(call: Call, params: EscalationCreate) -> dict[str, Any]:
    return await escalations.create(
        call.hub,
        call.actor,
        params.subject,
        params.situation,
        bead_id=params.bead_id,
        expires_in_seconds=params.expires_in_seconds,
    )


@method("escalations.list")
async def list_(call: Call, params: EscalationList) -> dict[str, Any]:
    return await escalations.list_(
        call.hub, call.actor, status=params.status, mine=params.mine, limit=params.limit
    )


@method("escalations.get")
async def get(call: Call, params: EscalationGet) -> dict[str, Any]:
    return await escalations.get(call.hub, call.actor, params.escalation_id)


@method("escalations.respond")
async def respond(call: Call, params: EscalationRespond) -> dict[str, Any]:
    return await escalations.respond(call.hub, call.actor, params.escalation_id, params.response)


@method("escalations.wait")
async def wait(call: Call, params: EscalationWait) -> dict[str, Any]:
    return await escalations.wait_answer(call.hub, call.actor, params.escalation_id, params.wait)
