"""News: what is new for an agent's model (what hooks show it)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from protocol.schema import Params


class NewsGet(Params):
    #: Count the mail and answers returned as shown to the model.
    mark_shown: bool = True
    limit: int = Field(default=20, ge=1, le=200)
    #: Repo-relative files the agent works on: others' reservations on
    #: them are reported as conflicts.
    working: list[str] = Field(default_factory=list, max_length=1000)


METHODS: dict[str, type[BaseModel]] = {"news.get": NewsGet}
