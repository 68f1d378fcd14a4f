"""Identity and authority: join requests and policy, invitations, keys,
granted roles, agent deletion, sign-in links and the audit trail. All but
the ``keys.*`` calls on one's own keys are for humans."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from protocol.schema import NoParams, Params

Uuid = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F-]{32,36}$")]
JoinPolicy = Literal["open", "approval"]


class JoinRequests(Params):
    status: Literal["pending", "admitted", "refused", "joined"] | None = "pending"


class JoinDecision(Params):
    request_id: Uuid


class JoinPolicySet(Params):
    """``null``: back to the hub's default."""

    join_policy: JoinPolicy | None


class InvitationCreate(Params):
    uses: int = Field(default=1, ge=1, le=1000)
    ttl_seconds: int = Field(default=7 * 86400, ge=60, le=30 * 86400)


class KeysList(Params):
    agent_id: Uuid | None = None


class KeysRotate(Params):
    agent_id: Uuid | None = None


class KeysRevoke(Params):
    key_id: Uuid


class AgentGrant(Params):
    agent_id: Uuid
    role: Literal["coordinator"] | None


class AgentDelete(Params):
    agent_id: Uuid


class AuthLink(Params):
    human_name: str = Field(min_length=1, max_length=100)
    ttl_seconds: int = Field(default=15 * 60, ge=60, le=7 * 86400)


class AuditList(Params):
    limit: int = Field(default=100, ge=1, le=1000)
    before: int | None = Field(default=None, ge=1, le=2**63 - 1)


METHODS: dict[str, type[BaseModel]] = {
    "join.requests": JoinRequests,
    "join.admit": JoinDecision,
    "join.refuse": JoinDecision,
    "join.policy.get": NoParams,
    "join.policy.set": JoinPolicySet,
    "invitations.create": InvitationCreate,
    "keys.list": KeysList,
    "keys.rotate": KeysRotate,
    "keys.revoke": KeysRevoke,
    "agents.grant": AgentGrant,
    "agents.delete": AgentDelete,
    "auth.link": AuthLink,
    "audit.list": AuditList,
}

#: Every one of these is a human's call (``keys.*`` and ``agents.delete`` an
#: agent may make on itself).
HUMAN_ONLY = frozenset(
    {
        "join.requests",
        "join.admit",
        "join.refuse",
        "join.policy.set",
        "invitations.create",
        "agents.grant",
        "auth.link",
        "audit.list",
    }
)
