"""Human sign-in, join requests and policy, invitations, keys, granted
roles and the audit trail (hub.services.humans, admission, keys, audit)."""

from __future__ import annotations

from typing import Any

from hub.services import admission, audit, auth, keys, signin
from hub.transport.http import inputs as i
from hub.transport.http import outputs as o
from hub.transport.http.base import actor_of
from hub.transport.http.registry import HttpCall, api

TAG = "authority"
HUMAN = {403: "only a signed-in human may"}


@api.post(
    "/v1/auth/signin",
    summary="Trade a human credential (operator token, one-time link) for a human ticket",
    tag=TAG,
    body=i.SignInRequest,
    response=o.SignInResponse,
    errors={401: "not an operator token or a live sign-in link", 404: "no such project"},
    auth=False,
)
async def sign_in(call: HttpCall, body: i.SignInRequest) -> dict[str, Any]:
    return await signin.sign_in(call.hub, body.token, body.project_slug, body.human_name)


@api.post(
    "/v1/auth/links",
    summary="A one-time sign-in link for a human (a signed-in human, or the operator token)",
    tag=TAG,
    body=i.SignInLinkRequest,
    response=o.SignInLinkResponse,
    errors={**HUMAN, 401: "no operator token or human ticket", 404: "no such project"},
    auth=False,
)
async def sign_in_link(call: HttpCall, body: i.SignInLinkRequest) -> dict[str, Any]:
    token = auth.bearer_token(call.request.headers.get("authorization"))
    if token and token.startswith(signin.OPERATOR_PREFIX):
        link = await signin.create_link(
            call.hub,
            human_name=body.human_name,
            operator_token=token,
            project_slug=body.project_slug,
            ttl_seconds=body.ttl_seconds,
        )
    else:
        link = await signin.create_link(
            call.hub,
            human_name=body.human_name,
            actor=await actor_of(call.request),
            ttl_seconds=body.ttl_seconds,
        )
    base = f"{call.request.url.scheme}://{call.request.url.netloc}"
    return {**link, "url": signin.sign_in_url(base, link["token"])}


@api.get(
    "/v1/join-policy",
    summary="The project's join policy",
    tag=TAG,
    response=o.JoinPolicyResponse,
)
async def get_join_policy(call: HttpCall) -> dict[str, Any]:
    return await admission.get_policy(call.hub, call.actor)


@api.post(
    "/v1/join-policy",
    summary="Set the project's join policy (null: the hub's default)",
    tag=TAG,
    body=i.JoinPolicyRequest,
    response=o.JoinPolicyResponse,
    errors=HUMAN,
    human=True,
)
async def set_join_policy(call: HttpCall, body: i.JoinPolicyRequest) -> dict[str, Any]:
    return await admission.set_policy(call.hub, call.actor, body.join_policy)


@api.get(
    "/v1/join-requests",
    summary="Agents waiting to join the project",
    tag=TAG,
    query=i.JoinRequestsQuery,
    response=o.JoinRequestsResponse,
    errors=HUMAN,
    human=True,
)
async def join_requests(call: HttpCall, query: i.JoinRequestsQuery) -> dict[str, Any]:
    return await admission.list_requests(call.hub, call.actor, query.status)


@api.post(
    "/v1/join-requests/{request_id}/admit",
    summary="Admit a waiting agent: its next init succeeds",
    tag=TAG,
    response=o.JoinRequestView,
    errors={**HUMAN, 404: "no such request", 409: "already decided"},
    human=True,
)
async def admit(call: HttpCall) -> dict[str, Any]:
    return await admission.decide(call.hub, call.actor, call.path("request_id"), admit=True)


@api.post(
    "/v1/join-requests/{request_id}/refuse",
    summary="Refuse a waiting agent",
    tag=TAG,
    response=o.JoinRequestView,
    errors={**HUMAN, 404: "no such request", 409: "already decided"},
    human=True,
)
async def refuse(call: HttpCall) -> dict[str, Any]:
    return await admission.decide(call.hub, call.actor, call.path("request_id"), admit=False)


@api.post(
    "/v1/invitations",
    summary="An invitation token: an init carrying it joins at once",
    tag=TAG,
    body=i.InvitationRequest,
    response=o.InvitationResponse,
    errors=HUMAN,
    human=True,
)
async def invite(call: HttpCall, body: i.InvitationRequest) -> dict[str, Any]:
    return await admission.create_invitation(call.hub, call.actor, body.uses, body.ttl_seconds)


@api.get(
    "/v1/keys",
    summary="Api keys: all of the project's for a human, its own for an agent",
    tag=TAG,
    query=i.KeysQuery,
    response=o.KeysResponse,
    errors={403: "another agent's keys"},
)
async def list_keys(call: HttpCall, query: i.KeysQuery) -> dict[str, Any]:
    return await keys.list_(call.hub, call.actor, query.agent_id or None)


@api.post(
    "/v1/keys/rotate",
    summary="A new key for an agent; its other keys are revoked",
    tag=TAG,
    body=i.RotateKeyRequest,
    response=o.RotateKeyResponse,
    errors={403: "another agent's key", 404: "no such agent"},
)
async def rotate_key(call: HttpCall, body: i.RotateKeyRequest) -> dict[str, Any]:
    return await keys.rotate(call.hub, call.actor, body.agent_id or None)


@api.post(
    "/v1/keys/{key_id}/revoke",
    summary="Revoke a key: refused at once everywhere, its sessions closed",
    tag=TAG,
    response=o.KeyView,
    errors={404: "no such key of the caller's (or, for a human, the project's)"},
)
async def revoke_key(call: HttpCall) -> dict[str, Any]:
    return await keys.revoke(call.hub, call.actor, call.path("key_id"))


@api.post(
    "/v1/agents/{agent_id}/grant",
    summary="Grant (or take back, with null) the coordinator role",
    tag=TAG,
    body=i.GrantRequest,
    response=o.GrantResponse,
    errors={**HUMAN, 404: "no such agent"},
    human=True,
)
async def grant(call: HttpCall, body: i.GrantRequest) -> dict[str, Any]:
    return await admission.grant(call.hub, call.actor, call.path("agent_id"), body.role)


@api.get(
    "/v1/audit",
    summary="The audit trail of human actions, newest first",
    tag=TAG,
    query=i.AuditQuery,
    response=o.AuditResponse,
    errors=HUMAN,
    human=True,
)
async def audit_trail(call: HttpCall, query: i.AuditQuery) -> dict[str, Any]:
    return await audit.list_(call.hub, call.actor, query.limit, query.before)
