"""What every service function receives: the hub's parts and the caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hub.bus import Bus
from hub.bus.relay import Relay
from hub.config import Settings
from hub.services.limits import CallBuckets, Limiter, MemoryLimiter
from hub.store import Store
from protocol.errors import forbidden


@dataclass(slots=True)
class Hub:
    settings: Settings
    store: Store
    bus: Bus
    relay: Relay
    #: This instance's open WebSocket sessions (hub.transport.ws adds and
    #: removes them; /metrics counts them).
    sessions: set[Any] = field(default_factory=set)
    #: Rate limits (hub.services.limits), on the bus's backend.
    limiter: Limiter = field(default_factory=MemoryLimiter)
    #: Calls per key on this instance (hub.services.limits.spend_call).
    calls: CallBuckets = field(default_factory=CallBuckets)
    #: This instance's operator token (hub.services.signin), set at start-up.
    operator_token: str = ""


@dataclass(frozen=True, slots=True)
class Actor:
    """An authenticated caller, always bound to one project.

    ``agent_id`` is None for a human (signed in with a human credential:
    hub.services.signin): humans act on the project (answer escalations,
    revoke reservations, admit agents, manage keys) but hold no claims or
    sessions of their own. An agent's own dashboard (``bdh :dashboard``) is
    that agent, with ``credential`` naming its ticket.

    ``role`` is what the agent declared (it picks a playbook and grants
    nothing); ``granted_role`` is what a human granted it.
    """

    project_id: str
    project_slug: str
    agent_id: str | None
    alias: str
    human_name: str = ""
    role: str = ""
    granted_role: str = ""
    #: ``key:<id>`` or ``ticket:<id>``: what authenticated the caller, so
    #: revoking it can find the sessions it opened.
    credential: str = ""

    @property
    def is_human(self) -> bool:
        return self.agent_id is None

    @property
    def via_ticket(self) -> bool:
        return self.credential.startswith("ticket:")

    def require_human(self, doing: str) -> None:
        """Human-only actions: no agent key or agent ticket may do them."""
        if self.agent_id is not None:
            raise forbidden(f"only a signed-in human may {doing}", needs="human")

    def require_agent(self) -> str:
        if self.agent_id is None:
            raise forbidden("this call needs an agent's api key, not a dashboard ticket")
        return self.agent_id
