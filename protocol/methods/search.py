"""Full-text search over the project's mail, chat, escalations and issues."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from protocol.schema import Params, Recipient

SearchKind = Literal["mail", "chat", "escalation", "issue"]


class SearchQuery(Params):
    #: Words to find, in web-search syntax: `"exact phrase"`, `-without`, `or`.
    text: str = Field(min_length=1, max_length=500)
    #: Only these kinds (all four when omitted).
    types: list[SearchKind] | None = Field(default=None, min_length=1, max_length=4)
    #: Only what this agent (or human:<name>) wrote or, for mail, received.
    agent: Recipient | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(default=50, ge=1, le=500)
    #: The `next` of the previous page: continue after its last hit.
    after: str | None = Field(default=None, max_length=200)


METHODS: dict[str, type[BaseModel]] = {"search.query": SearchQuery}
