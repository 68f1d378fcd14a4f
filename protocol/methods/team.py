"""The team lead's view of the project: every conversation, who waits on
whom, stale holdings, reassigning work, and the hourly shape of the work."""

from __future__ import annotations

from pydantic import BaseModel, Field

from protocol.schema import Alias, Params


class ChatAll(Params):
    limit: int = Field(default=200, ge=1, le=1000)


class TeamWaiting(Params):
    pass


class TeamStale(Params):
    pass


class ClaimsReassign(Params):
    bead_id: str = Field(min_length=1, max_length=100)
    to: Alias


class StatsGet(Params):
    hours: int = Field(default=24, ge=1, le=24 * 14)


METHODS: dict[str, type[BaseModel]] = {
    "chat.all": ChatAll,
    "team.waiting": TeamWaiting,
    "team.stale": TeamStale,
    "claims.reassign": ClaimsReassign,
    "stats.get": StatsGet,
}
