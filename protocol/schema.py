"""Shared pieces of the method catalogue's parameter models."""

from __future__ import annotations

import re
from typing import Annotated, Any

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


#: What PostgreSQL's bigint holds: no number the hub stores is larger.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def unstorable(value: Any, field: str = "") -> tuple[str, str] | None:
    """The first value in a request that no field may hold, whatever its
    model says: a NUL character (PostgreSQL text and jsonb cannot store
    it) in any string or object key, or a number past 64 bits. Checked for
    every call before its model (rpc.parse_params), so each method and
    route refuses them with INVALID_PARAMS naming the field, not an error
    from the database. Returns (field, problem) or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return field or "params", "must not contain NUL (\\u0000) characters"
    elif isinstance(value, bool) or value is None:
        return None
    elif isinstance(value, (int, float)):
        if not INT64_MIN <= value <= INT64_MAX:
            return field or "params", "number out of range (at most 64-bit integers)"
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{field}.{key}" if field else str(key)
            if isinstance(key, str) and "\x00" in key:
                return name, "must not contain NUL (\\u0000) characters"
            found = unstorable(item, name)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = unstorable(item, f"{field}.{index}" if field else str(index))
            if found is not None:
                return found
    return None
