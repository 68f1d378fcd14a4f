"""Activity: the project's recent events, for the dashboard's feeds."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from protocol.schema import Params

EventType = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Uuid = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F-]{32,36}$")]


class ActivityRecent(Params):
    limit: int = Field(default=100, ge=1, le=500)
    #: Only these event types (e.g. ``["mail", "chat.message"]``).
    types: list[EventType] | None = Field(default=None, min_length=1, max_length=50)
    #: Only events that concern this agent.
    agent_id: Uuid | None = None
    #: Page back: only events before this cursor.
    before: int | None = Field(default=None, ge=0)


METHODS: dict[str, type[BaseModel]] = {
    "activity.recent": ActivityRecent,
}
