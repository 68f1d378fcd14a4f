"""Escalations to a human, and the project's policy (with conditional GET)."""

from __future__ import annotations

from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hub.services import clock, escalations, policies, presence
from hub.transport.http import inputs as i
from hub.transport.http import outputs as o
from hub.transport.http.base import ORJSONResponse, error_response
from hub.transport.http.registry import HttpCall, api
from protocol.errors import ErrorCode, RpcError

TAG = "governance"


@api.post(
    "/v1/escalations",
    retryable=True,
    summary="Ask a human for help",
    tag=TAG,
    body=i.EscalateRequest,
    response=o.EscalateResponse,
    errors={403: "the body names another agent's workspace"},
)
async def escalate(call: HttpCall, body: i.EscalateRequest) -> dict[str, Any]:
    await presence.require_self(call.hub, call.actor, body.workspace_id)
    return await escalations.create(
        call.hub, call.actor, body.subject, body.situation, bead_id=body.bead_id or None
    )


@api.get(
    "/v1/escalations",
    summary="The project's escalations, newest first",
    tag=TAG,
    query=i.EscalationsQuery,
    response=o.EscalationsResponse,
)
async def list_escalations(call: HttpCall, query: i.EscalationsQuery) -> dict[str, Any]:
    return await escalations.list_(
        call.hub, call.actor, status=query.status or None, limit=query.limit
    )


def _not_modified(request: Request, etag: str, last_modified: str) -> bool:
    """RFC 9110: If-None-Match wins over If-Modified-Since."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or etag in tags
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        return since.tzinfo is not None and clock.parse(last_modified) <= since
    return False


@api.get(
    "/v1/policies/active",
    summary="The project's active policy: invariants and role playbooks",
    tag=TAG,
    query=i.PolicyQuery,
    response=o.ActivePolicyResponse,
    errors={
        304: "not modified since the given ETag or date",
        400: "unknown role (`data.roles` lists the project's roles)",
    },
)
async def active_policy(call: HttpCall, query: i.PolicyQuery) -> Response:
    """Answers with ETag and Last-Modified; a request with a matching
    If-None-Match (or a later If-Modified-Since) gets 304 and no body."""
    try:
        policy = await policies.get(
            call.hub, call.actor, role=query.role or None, only_selected=query.only_selected
        )
    except RpcError as exc:
        if exc.code != ErrorCode.NOT_FOUND:
            raise
        # bdh takes only a 400 as "role rejected by server" and then names the
        # project's roles; any other status reaches its user as a bare error.
        rejected = error_response(exc)
        rejected.status_code = 400
        return rejected
    updated = clock.parse(policy["updated_at"]).replace(microsecond=0)
    headers = {
        "ETag": policy["etag"],
        "Last-Modified": format_datetime(updated, usegmt=True),
        "Cache-Control": "private, no-cache",
    }
    if _not_modified(call.request, policy["etag"], clock.iso(updated) or ""):
        return Response(status_code=304, headers=headers)
    return ORJSONResponse(policy, headers=headers)


@api.post(
    "/v1/policies/reset",
    summary="Activate a new policy version with the default content",
    tag=TAG,
    response=o.ResetPolicyResponse,
    errors={403: "only the coordinator or a human may reset the policy"},
    human=True,
)
async def reset_policy(call: HttpCall) -> dict[str, Any]:
    return await policies.reset(call.hub, call.actor)
