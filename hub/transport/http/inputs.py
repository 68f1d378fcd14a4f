"""Request bodies and query parameters of the HTTP shim, field for field
as bdh and the aw library send them (see docs/bdh-contract in
/work/shared). Bodies ignore unknown fields but are strict about types: a
number where a string belongs is a 422, not a silent conversion. Query
parameters arrive as text, so their models read ``true``/``10``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from hub.services.clock import now
from hub.transport.http.base import Body, Query

Id = Annotated[str, StringConstraints(max_length=100)]
Name = Annotated[str, StringConstraints(max_length=200)]
Url = Annotated[str, StringConstraints(max_length=1000)]
Path = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
Paths = Annotated[list[Path], Field(min_length=1, max_length=500)]
Ttl = Annotated[int, Field(ge=1, le=86_400)]


def _at_most(most: int) -> Callable[[int], int]:
    return lambda value: min(value, most)


# Page sizes: at least 1; a larger one than the hub serves is read as its
# maximum rather than refused, since clients pick their own defaults.
Limit500 = Annotated[int, Field(ge=1), AfterValidator(_at_most(500))]
Limit1000 = Annotated[int, Field(ge=1), AfterValidator(_at_most(1000))]


class StrictBody(Body):
    model_config = ConfigDict(extra="ignore", strict=True)


# -- onboarding, projects, repos, workspaces ----------------------------------


class InitRequest(StrictBody):
    """bdh's and the aw library's InitRequest in one: bdh names a repo, aw
    names the project and the agent type."""

    project_slug: str = Field(default="", max_length=64)
    project_name: str = Field(default="", max_length=200)
    repo_origin: Url = ""
    alias: str | None = Field(default=None, max_length=64)
    human_name: Name = ""
    role: str = Field(default="", max_length=64)
    email: Name = ""
    hostname: Name = ""
    workspace_path: Url = ""
    agent_type: str = Field(default="agent", max_length=64)
    program: Name = ""
    model: Name = ""
    #: A human's invitation (also accepted as Authorization: Bearer bhi_...).
    invitation: str = Field(default="", max_length=200)


class TicketRequest(StrictBody):
    api_key: str = Field(min_length=1, max_length=200)


class TicketRevokeRequest(StrictBody):
    ticket: str = Field(min_length=1, max_length=200)


class SignInRequest(StrictBody):
    token: str = Field(min_length=1, max_length=200)
    project_slug: str = Field(default="", max_length=64)
    human_name: str = Field(default="", max_length=100)


class SignInLinkRequest(StrictBody):
    human_name: str = Field(min_length=1, max_length=100)
    project_slug: str = Field(default="", max_length=64)
    ttl_seconds: int = Field(default=15 * 60, ge=60, le=7 * 86400)


class JoinPolicyRequest(StrictBody):
    join_policy: Annotated[str, StringConstraints(pattern="^(open|approval)$")] | None


class InvitationRequest(StrictBody):
    uses: int = Field(default=1, ge=1, le=1000)
    ttl_seconds: int = Field(default=7 * 86400, ge=60, le=30 * 86400)


class RotateKeyRequest(StrictBody):
    agent_id: Id | None = None


class GrantRequest(StrictBody):
    role: Annotated[str, StringConstraints(pattern="^coordinator$")] | None


class JoinRequestsQuery(Query):
    status: Annotated[str, StringConstraints(pattern="^(pending|admitted|refused|joined)$")] = (
        "pending"
    )


class KeysQuery(Query):
    agent_id: Id | None = None


class AuditQuery(Query):
    limit: Limit1000 = 100
    before: int | None = Field(default=None, ge=1, le=2**63 - 1)


class EnsureProjectRequest(StrictBody):
    slug: str = Field(min_length=1, max_length=64)


class EnsureRepoRequest(StrictBody):
    project_id: Id
    origin_url: Url = Field(min_length=1)


class LookupRepoRequest(StrictBody):
    origin_url: Url = Field(min_length=1)


class RegisterWorkspaceRequest(StrictBody):
    repo_origin: Url = Field(min_length=1)
    role: str = Field(default="", max_length=64)
    hostname: Name = ""
    workspace_path: Url = ""


class SuggestNamePrefixRequest(StrictBody):
    origin_url: Url = Field(min_length=1)


class SuggestAliasPrefixRequest(StrictBody):
    project_slug: str = Field(max_length=64)


class RefreshPresenceRequest(StrictBody):
    workspace_id: Id
    alias: str = Field(max_length=64)
    human_name: Name = ""
    project_id: Id = ""
    project_slug: str = Field(default="", max_length=64)
    repo_id: Id = ""
    repo_origin: Url = ""
    canonical_origin: Url = ""
    hostname: Name = ""
    workspace_path: Url = ""
    program: Name = ""
    model: Name = ""
    repo: Name = ""
    branch: Name = ""
    role: str = Field(default="", max_length=64)
    ttl_seconds: Ttl | None = None


class WorkspacesQuery(Query):
    human_name: str = ""
    repo: str = ""
    alias: str = ""
    hostname: str = ""
    include_claims: bool = False
    include_presence: bool = True
    include_deleted: bool = False
    limit: Limit1000 = 200


class TeamWorkspacesQuery(Query):
    human_name: str = ""
    repo: str = ""
    include_claims: bool = True
    include_presence: bool = True
    only_with_claims: bool = False
    always_include_workspace_id: str = ""
    limit: Limit1000 = 50


class StatusQuery(Query):
    workspace_id: str = ""
    repo: str = ""


# -- beads ------------------------------------------------------------------------


class CommandRequest(StrictBody):
    workspace_id: Id
    repo_id: Id = ""
    alias: str = Field(max_length=64)
    human_name: Name
    repo_origin: Url
    role: str = Field(default="", max_length=64)
    command_line: str = Field(max_length=10_000)


class SyncRequest(StrictBody):
    workspace_id: Id
    repo_id: Id = ""
    alias: str = Field(max_length=64)
    human_name: Name
    repo_origin: Url
    role: str = Field(default="", max_length=64)
    command_line: str = Field(default="", max_length=10_000)
    issues_jsonl: str = ""
    sync_mode: str = Field(default="", pattern=r"^(|full|incremental)$")
    changed_issues: str = ""
    deleted_ids: list[Annotated[str, StringConstraints(max_length=200)]] | None = None
    sync_protocol_version: int | None = None


# -- mail -------------------------------------------------------------------------


class SendMessageRequest(StrictBody):
    """bdh's SendRequest (``to_workspace``) and the aw library's
    SendMessageRequest (``to_alias`` or ``to_agent_id``) in one body; the
    sender is always the key's agent."""

    from_workspace: Id = ""
    from_alias: str = Field(default="", max_length=64)
    to_workspace: Id = ""
    to_agent_id: Id = ""
    to_alias: str = Field(default="", max_length=64)
    subject: Name = ""
    body: str
    priority: str = Field(default="", max_length=20)
    thread_id: Id | None = None


class InboxQuery(Query):
    workspace_id: str = ""
    limit: Limit500 = 50
    unread_only: bool = False
    from_workspace: str = ""
    from_alias: str = ""


class AckRequest(StrictBody):
    workspace_id: Id = ""


# -- chat -------------------------------------------------------------------------


class ChatCreateSessionRequest(StrictBody):
    to_aliases: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=50
    )
    message: str
    leaving: bool = False
    from_workspace: Id = ""
    from_alias: str = Field(default="", max_length=64)


class ChatSendMessageRequest(StrictBody):
    body: str
    hang_on: bool = False
    workspace_id: Id = ""
    alias: str = Field(default="", max_length=64)


class ChatMarkReadRequest(StrictBody):
    up_to_message_id: Id = Field(min_length=1)
    workspace_id: Id = ""


class ChatMessagesQuery(Query):
    unread_only: bool = False
    limit: Limit1000 = 100


def _in_future(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("deadline needs a time zone (RFC 3339, e.g. 2026-01-01T12:00:00Z)")
    if value <= now():
        raise ValueError("deadline must be in the future")
    return value


class ChatStreamQuery(Query):
    deadline: Annotated[datetime, AfterValidator(_in_future)] = Field(
        description="RFC 3339; the stream ends at this instant; must be in the future"
    )


# -- reservations -----------------------------------------------------------------


class LockRequest(StrictBody):
    """bdh's shape: several paths, answered with granted/conflicts."""

    workspace_id: Id = ""
    alias: str = Field(default="", max_length=64)
    paths: Paths
    ttl_seconds: Ttl | None = None
    exclusive: bool = True
    reason: Name = ""
    bead_id: Id = ""
    #: Seconds to wait in line for conflicting paths: a long request,
    #: answered when all are granted or the wait ends.
    wait: Annotated[float, Field(ge=0, le=86_400)] | None = None


class ReservationAcquireRequest(StrictBody):
    """The aw library's shape: one resource, a conflict is HTTP 409."""

    resource_key: Path
    ttl_seconds: Ttl | None = None
    metadata: dict[str, Any] | None = None


class RenewLocksRequest(StrictBody):
    workspace_id: Id = ""
    alias: str = Field(default="", max_length=64)
    paths: Paths
    ttl_seconds: Ttl | None = None


class ReservationRenewRequest(StrictBody):
    resource_key: Path
    ttl_seconds: Ttl | None = None


class UnlockRequest(StrictBody):
    workspace_id: Id = ""
    alias: str = Field(default="", max_length=64)
    paths: Paths


class ReservationReleaseRequest(StrictBody):
    resource_key: Path


class RevokeLocksRequest(StrictBody):
    workspace_id: Id = ""
    alias: str = Field(default="", max_length=64)
    paths: Paths
    reason: Name = ""


class ReservationRevokeRequest(StrictBody):
    """The target must be named: ``{}`` or a misspelt field would otherwise
    revoke every reservation of the project (``"prefix": ""`` does that,
    on purpose)."""

    prefix: Url


class CheckLocksRequest(StrictBody):
    paths: Paths


class GuardOverrideRequest(StrictBody):
    paths: Paths
    holders: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=500
    )
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    via: str = Field(default="pre-commit", max_length=20)


class ClaimRequest(StrictBody):
    bead_id: Id = Field(min_length=1)
    #: Seconds to wait in line when another agent holds it (a long request).
    wait: Annotated[float, Field(ge=0, le=86_400)] | None = None


class ReleaseClaimRequest(StrictBody):
    bead_id: Id = Field(min_length=1)


class QueueQuery(Query):
    kind: str = ""


class LocksQuery(Query):
    workspace_id: str = ""
    alias: str = ""
    path_prefix: str = ""


# -- escalations, policies ---------------------------------------------------------


class EscalateRequest(StrictBody):
    workspace_id: Id = ""
    alias: str = Field(default="", max_length=64)
    subject: str
    situation: str
    bead_id: Id = ""


class EscalationsQuery(Query):
    status: str = ""
    limit: Limit1000 = 100


class PolicyQuery(Query):
    role: str = ""
    only_selected: bool = False
