from __future__ import annotations

from typing import Any

from hub.services import policies
from hub.transport.rpc import Call, method
from protocol.methods.policies import PolicyActivate, PolicyCreate, PolicyGet, PolicyVersions
from protocol.schema import NoParams


@method("policy.get")
async def get(call: Call, params: PolicyGet) -> dict[str, Any]:
    return await policies.get(
        call.hub, call.actor, role=params.role, only_selected=params.only_selected
    )


@method("policy.versions")
async def versions(call: Call, params: PolicyVersions) -> dict[str, Any]:
    return await policies.versions(call.hub, call.actor, limit=params.limit)


@method("policy.create")
async def create(call: Call, params: PolicyCreate) -> dict[str, Any]:
    content = params.model_dump()
    return await policies.create(
        call.hub, call.actor, content["invariants"], content["roles"], activate=params.activate
    )


@method("policy.activate")
async def activate(call: Call, params: PolicyActivate) -> dict[str, Any]:
    return await policies.activate(call.hub, call.actor, params.version)


@method("policy.reset")
async def reset(call: Call, params: NoParams) -> dict[str, Any]:
    return await policies.reset(call.hub, call.actor)
