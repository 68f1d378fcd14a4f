"""Response bodies of the HTTP shim, as the clients read them.

These models document ``/openapi.json`` and let the tests check each
answer against the contract with strict types (Go's JSON decoder rejects
a number where a string belongs). Where bdh and the aw library read the
same route with different field names, the model carries both. Fields a
client marks ``omitempty`` are optional here; the hub may send more.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- onboarding, identity ------------------------------------------------------------


class InitResponse(Out):
    status: str
    created_at: str
    api_key: str
    project_id: str
    project_slug: str
    agent_id: str
    repo_id: str | None = None
    canonical_origin: str | None = None
    workspace_id: str | None = None
    alias: str
    created: bool
    workspace_created: bool


class TicketResponse(Out):
    ticket: str
    expires_at: str
    project_id: str
    project_slug: str
    human_name: str


class TicketRevokeResponse(Out):
    revoked: bool


class SignInResponse(Out):
    """A human ticket; for the operator token without a project, the
    projects to choose from instead."""

    ticket: str | None = None
    expires_at: str | None = None
    project_slug: str | None = None
    human_name: str | None = None
    choose_project: bool | None = None
    projects: list[str] | None = None


class SignInLinkResponse(Out):
    token: str
    url: str
    project_slug: str
    human_name: str
    expires_at: str


class JoinPolicyResponse(Out):
    join_policy: str
    default: bool
    hub_default: str


class JoinRequestView(Out):
    request_id: str
    alias: str
    status: str
    hostname: str
    workspace_path: str
    created_at: str


class JoinRequestsResponse(Out):
    requests: list[JoinRequestView]
    count: int


class InvitationResponse(Out):
    invitation: str
    invitation_id: str
    project_slug: str
    uses: int
    expires_at: str


class KeyView(Out):
    key_id: str
    agent_id: str
    alias: str
    prefix: str
    created_at: str
    active: bool


class KeysResponse(Out):
    keys: list[KeyView]
    count: int


class RotateKeyResponse(Out):
    api_key: str
    key_id: str
    agent_id: str
    revoked: list[str]


class GrantResponse(Out):
    agent_id: str
    alias: str
    granted_role: str | None


class AuditEntry(Out):
    id: int
    at: str
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]


class AuditResponse(Out):
    entries: list[AuditEntry]
    count: int


class EnsureProjectResponse(Out):
    project_id: str
    slug: str
    created: bool


class ProjectSummary(Out):
    id: str
    slug: str
    name: str | None = None
    created_at: str
    repo_count: int
    workspace_count: int


class ListProjectsResponse(Out):
    projects: list[ProjectSummary]


class DeleteProjectResponse(Out):
    id: str
    repos_deleted: int
    workspaces_deleted: int
    claims_deleted: int
    presence_cleared: int


class ProjectResponse(Out):
    project_id: str
    slug: str
    name: str


class EnsureRepoResponse(Out):
    repo_id: str
    canonical_origin: str
    name: str
    created: bool


class LookupRepoResponse(Out):
    repo_id: str
    project_id: str
    project_slug: str
    canonical_origin: str
    name: str


class RegisterWorkspaceResponse(Out):
    workspace_id: str
    project_id: str
    project_slug: str
    repo_id: str
    canonical_origin: str
    alias: str
    human_name: str
    created: bool


class SuggestNamePrefixResponse(Out):
    name_prefix: str
    project_id: str
    project_slug: str
    repo_id: str
    canonical_origin: str


class SuggestAliasPrefixResponse(Out):
    project_slug: str
    project_id: str | None
    name_prefix: str


class RefreshPresenceResponse(Out):
    agent: dict[str, Any]
    workspace: dict[str, Any]


class HeartbeatResponse(Out):
    agent_id: str
    last_seen: str
    ttl_seconds: int


class AgentView(Out):
    agent_id: str
    alias: str
    human_name: str | None = None
    agent_type: str | None = None
    status: str | None = None
    last_seen: str | None = None
    online: bool


class ListAgentsResponse(Out):
    project_id: str
    agents: list[AgentView]


class IntrospectResponse(Out):
    project_id: str
    api_key_id: str | None = None
    agent_id: str | None = None
    alias: str | None = None
    human_name: str | None = None
    agent_type: str | None = None
    user_id: str | None = None


# -- workspaces and status --------------------------------------------------------------


class Claim(Out):
    bead_id: str
    title: str | None = None
    claimed_at: str
    apex_id: str | None = None
    apex_title: str | None = None
    apex_type: str | None = None


class Workspace(Out):
    workspace_id: str
    alias: str
    human_name: str
    project_slug: str
    role: str | None = None
    hostname: str | None = None
    workspace_path: str | None = None
    apex_id: str | None = None
    apex_title: str | None = None
    apex_type: str | None = None
    focus_apex_id: str | None = None
    focus_apex_title: str | None = None
    focus_apex_type: str | None = None
    focus_apex_repo_name: str | None = None
    focus_apex_branch: str | None = None
    focus_updated_at: str | None = None
    status: str
    last_seen: str | None
    claims: list[Claim]


class WorkspacesResponse(Out):
    workspaces: list[Workspace]
    count: int


class DeleteWorkspaceResponse(Out):
    workspace_id: str
    alias: str
    deleted_at: str


class StatusAgent(Out):
    alias: str
    member: str
    program: str
    role: str | None = None
    status: str
    current_locks: list[str]
    current_issue: str
    last_seen: str | None


class StatusResponse(Out):
    workspace: dict[str, Any]
    agents: list[StatusAgent]
    locks: list[Any]
    escalations_pending: int
    timestamp: str


# -- beads ------------------------------------------------------------------------------


class BeadInProgress(Out):
    bead_id: str
    workspace_id: str
    alias: str
    human_name: str
    started_at: str
    title: str | None = None
    role: str | None = None


class CommandContext(Out):
    messages_waiting: int
    beads_in_progress: list[BeadInProgress]


class CommandResponse(Out):
    approved: bool
    reason: str | None = None
    context: CommandContext | None = None


class SyncStats(Out):
    received: int
    inserted: int
    updated: int
    deleted: int


class SyncResponse(Out):
    synced: bool
    issues_count: int
    context: CommandContext | None = None
    stats: SyncStats | None = None
    sync_protocol_version: int | None = None


# -- mail -------------------------------------------------------------------------------


class SendMessageResponse(Out):
    message_id: str
    status: str
    delivered_at: str


class InboxMessage(Out):
    """bdh's Message and the aw library's InboxMessage in one."""

    message_id: str
    from_workspace: str
    from_agent_id: str
    from_alias: str
    subject: str
    body: str
    priority: str
    thread_id: str | None = None
    read: bool
    read_at: str | None
    created_at: str


class InboxResponse(Out):
    messages: list[InboxMessage]
    count: int
    has_more: bool


class AckResponse(Out):
    message_id: str
    acknowledged_at: str


# -- chat -------------------------------------------------------------------------------


class ChatParticipant(Out):
    agent_id: str
    workspace_id: str
    alias: str


class ChatCreateSessionResponse(Out):
    session_id: str
    message_id: str
    participants: list[ChatParticipant]
    sse_url: str
    targets_connected: list[str]
    targets_left: list[str]


class ChatSendMessageResponse(Out):
    message_id: str
    delivered: bool
    extends_wait_seconds: int


class ChatMessage(Out):
    message_id: str
    from_agent: str
    body: str
    timestamp: str
    created_at: str
    sender_leaving: bool


class ChatHistoryResponse(Out):
    session_id: str
    messages: list[ChatMessage]


class ChatMarkReadResponse(Out):
    success: bool
    messages_marked: int


class ChatPendingItem(Out):
    session_id: str
    participants: list[str]
    last_message: str
    last_from: str
    unread_count: int
    last_activity: str
    sender_waiting: bool
    time_remaining_seconds: int | None


class ChatPendingResponse(Out):
    pending: list[ChatPendingItem]
    messages_waiting: int


class ChatSessionItem(Out):
    session_id: str
    participants: list[str]
    created_at: str


class ChatListSessionsResponse(Out):
    sessions: list[ChatSessionItem]


class ChatEvent(Out):
    """The ``data:`` of each event on the chat stream."""

    type: str
    agent: str | None = None
    session_id: str | None = None
    message_id: str | None = None
    from_agent: str | None = None
    body: str | None = None
    by: str | None = None
    reason: str | None = None
    timestamp: str | None = None
    sender_leaving: bool | None = None
    reader_alias: str | None = None
    hang_on: bool | None = None
    extends_wait_seconds: int | None = None


# -- reservations -----------------------------------------------------------------------


class GrantedLock(Out):
    reservation_id: str
    path: str
    expires_at: str


class ConflictLock(Out):
    path: str
    held_by: str
    workspace_id: str
    bead_id: str | None = None
    reason: str | None = None
    exclusive: bool
    acquired_at: str | None = None
    expires_at: str | None = None
    retry_after_seconds: int


class LockResponse(Out):
    granted: list[GrantedLock]
    conflicts: list[ConflictLock]


class ReservationAcquireResponse(Out):
    status: str
    project_id: str | None = None
    resource_key: str
    holder_agent_id: str | None = None
    holder_alias: str | None = None
    acquired_at: str | None = None
    expires_at: str | None = None


class ReservationHeldError(Out):
    detail: str
    holder_agent_id: str
    holder_alias: str
    expires_at: str


class RenewLocksResponse(Out):
    renewed: list[GrantedLock]
    not_found: list[str]


class ReservationRenewResponse(Out):
    status: str
    resource_key: str
    expires_at: str


class UnlockResponse(Out):
    released: list[str]
    not_found: list[str]
    not_owner: list[str]


class ReservationReleaseResponse(Out):
    status: str
    resource_key: str


class ReservationRevokeResponse(Out):
    revoked_count: int
    revoked_keys: list[str]


class LockInfo(Out):
    """bdh's LockInfo and the aw library's ReservationView in one."""

    reservation_id: str
    resource_key: str
    path: str
    holder_alias: str
    holder_agent_id: str
    alias: str
    workspace_id: str
    project_id: str
    bead_id: str | None = None
    reason: str | None = None
    exclusive: bool
    acquired_at: str
    expires_at: str
    ttl_remaining_seconds: int
    metadata: dict[str, Any] | None


class ListLocksResponse(Out):
    reservations: list[LockInfo]
    count: int


# -- escalations, policies ----------------------------------------------------------------


class EscalateResponse(Out):
    escalation_id: str
    status: str
    created_at: str
    expires_at: str | None = None


class EscalationsResponse(Out):
    escalations: list[dict[str, Any]]
    count: int


class PolicyInvariant(Out):
    id: str
    title: str
    body_md: str


class PolicyRolePlaybook(Out):
    title: str
    playbook_md: str


class SelectedPolicyRole(Out):
    role: str
    title: str
    playbook_md: str


class ActivePolicyResponse(Out):
    policy_id: str
    project_id: str
    version: int
    updated_at: str
    invariants: list[PolicyInvariant]
    roles: dict[str, PolicyRolePlaybook] | None = None
    selected_role: SelectedPolicyRole | None = None
    adapters: dict[str, Any] | None = None


class ResetPolicyResponse(Out):
    reset: bool
    active_policy_id: str
    version: int
