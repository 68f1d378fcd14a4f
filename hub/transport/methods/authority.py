from __future__ import annotations

from typing import Any

from hub.services import admission, audit, keys, signin, workspaces
from hub.transport.rpc import Call, method
from protocol.methods.authority import (
    AgentDelete,
    AgentGrant,
    AuditList,
    AuthLink,
    InvitationCreate,
    JoinDecision,
    JoinPolicySet,
    JoinRequests,
    KeysList,
    KeysRevoke,
    KeysRotate,
)
from protocol.schema import NoParams


@method("join.requests")
async def join_requests(call: Call, params: JoinRequests) -> dict[str, Any]:
    return await admission.list_requests(call.hub, call.actor, params.status)


@method("join.admit")
async def join_admit(call: Call, params: JoinDecision) -> dict[str, Any]:
    return await admission.decide(call.hub, call.actor, params.request_id, admit=True)


@method("join.refuse")
async def join_refuse(call: Call, params: JoinDecision) -> dict[str, Any]:
    return await admission.decide(call.hub, call.actor, params.request_id, admit=False)


@method("join.policy.get")
async def join_policy_get(call: Call, params: NoParams) -> dict[str, Any]:
    return await admission.get_policy(call.hub, call.actor)


@method("join.policy.set")
async def join_policy_set(call: Call, params: JoinPolicySet) -> dict[str, Any]:
    return await admission.set_policy(call.hub, call.actor, params.join_policy)


@method("invitations.create")
async def invitations_create(call: Call, params: InvitationCreate) -> dict[str, Any]:
    return await admission.create_invitation(call.hub, call.actor, params.uses, params.ttl_seconds)


@method("keys.list")
async def keys_list(call: Call, params: KeysList) -> dict[str, Any]:
    return await keys.list_(call.hub, call.actor, params.agent_id)


@method("keys.rotate")
async def keys_rotate(call: Call, params: KeysRotate) -> dict[str, Any]:
    return await keys.rotate(call.hub, call.actor, params.agent_id)


@method("keys.revoke")
async def keys_revoke(call: Call, params: KeysRevoke) -> dict[str, Any]:
    return await keys.revoke(call.hub, call.actor, params.key_id)


@method("agents.grant")
async def agents_grant(call: Call, params: AgentGrant) -> dict[str, Any]:
    return await admission.grant(call.hub, call.actor, params.agent_id, params.role)


@method("agents.delete")
async def agents_delete(call: Call, params: AgentDelete) -> dict[str, Any]:
    return await workspaces.delete(call.hub, call.actor, params.agent_id)


@method("auth.link")
async def auth_link(call: Call, params: AuthLink) -> dict[str, Any]:
    return await signin.create_link(
        call.hub, human_name=params.human_name, actor=call.actor, ttl_seconds=params.ttl_seconds
    )


@method("audit.list")
async def audit_list(call: Call, params: AuditList) -> dict[str, Any]:
    return await audit.list_(call.hub, call.actor, params.limit, params.before)
