"""What every service function receives: the hub's parts and the caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hub.bus import Bus
from hub.bus.relay import Relay
from hub.config import Settings
from hub.services.limits import Limiter, MemoryLimiter
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


@dataclass(frozen=True, slots=True)
class Actor:
    """An authenticated caller, always bound to one project.

    ``agent_id`` is None for a human on the dashboard: humans act on the
    project (answer escalations, revoke reservations, post mail) but hold no
    claims or sessions of their own.
    """

    project_id: str
    project_slug: str
    agent_id: str | None
    alias: str
    human_name: str = ""
    role: str = ""

    @property
    def is_human(self) -> bool:
        return self.agent_id is None

    def require_agent(self) -> str:
        if self.agent_id is None:
            raise forbidden("this call needs an agent's api key, not a dashboard ticket")
        return self.agent_id
