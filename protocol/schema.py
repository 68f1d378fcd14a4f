"""Shared pieces of the method catalogue's parameter models."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

Alias = Annotated[str, StringConstraints(pattern=ALIAS_RE.pattern)]
#: Whom mail and chat go to: an agent's alias, or a human as ``human:<name>``.
RECIPIENT_RE = re.compile(r"^(?:human:[^\x00-\x1f:]{1,64}|[A-Za-z0-9][A-Za-z0-9._-]{0,63})$")
Recipient = Annotated[str, StringConstraints(pattern=RECIPIENT_RE.pattern)]
Slug = Annotated[str, StringConstraints(pattern=SLUG_RE.pattern)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
Text = Annotated[str, StringConstraints(max_length=4000)]


class Params(BaseModel):
    """Base of every method's params: unknown fields are an error, so a
    typo in a field name is reported instead of silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    pass


#: Printable ASCII without spaces, as HTTP's Idempotency-Key header allows.
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
]


class Retryable(Params):
    """A state-changing call: repeating it with the same ``idempotency_key``
    within 24 hours returns the first answer and changes nothing."""

    idempotency_key: IdempotencyKey | None = None
