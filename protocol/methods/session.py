"""Session, presence and status methods."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from protocol import topics
from protocol.schema import NoParams, Params, ShortText


class PresenceUpdate(Params):
    """What the agent is doing. Omitted fields keep their value."""

    repo: ShortText | None = None
    branch: ShortText | None = None
    program: ShortText | None = None
    model: ShortText | None = None
    role: ShortText | None = None
    focus: ShortText | None = None
    hostname: ShortText | None = None
    workspace_path: str | None = Field(default=None, max_length=1000)


class PresenceList(Params):
    online_only: bool = False


class SessionSubscribe(Params):
    """The event types this session receives from now on (see
    protocol.topics); null: every type."""

    events: list[str] | None

    @field_validator("events")
    @classmethod
    def _topics(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else topics.check(value)


class EventsSince(Params):
    cursor: int = Field(ge=0)
    limit: int = Field(default=500, ge=1, le=1000)


METHODS: dict[str, type[BaseModel]] = {
    "session.whoami": NoParams,
    "session.ping": NoParams,
    "session.subscribe": SessionSubscribe,
    "presence.list": PresenceList,
    "presence.update": PresenceUpdate,
    "status.get": NoParams,
    "events.since": EventsSince,
}
