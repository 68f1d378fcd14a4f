"""Escalations: an agent asks a human for a decision it cannot make."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from protocol.schema import Params, Retryable

SUBJECT_MAX = 200
SITUATION_MAX = 20_000
RESPONSE_MAX = 20_000
BEAD_ID_MAX = 100
DEFAULT_EXPIRES_IN_SECONDS = 24 * 3600
MAX_EXPIRES_IN_SECONDS = 30 * 24 * 3600

Uuid = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F-]{32,36}$")]
EscalationStatus = Literal["pending", "answered", "expired"]


class EscalationCreate(Retryable):
    subject: str = Field(min_length=1, max_length=SUBJECT_MAX)
    situation: str = Field(min_length=1, max_length=SITUATION_MAX)
    bead_id: str | None = Field(default=None, min_length=1, max_length=BEAD_ID_MAX)
    expires_in_seconds: int | None = Field(default=None, ge=1, le=MAX_EXPIRES_IN_SECONDS)


class EscalationList(Params):
    status: EscalationStatus | None = None
    #: Only the caller's own escalations (agents only).
    mine: bool = False
    limit: int = Field(default=100, ge=1, le=500)


class EscalationGet(Params):
    escalation_id: Uuid


class EscalationRespond(Params):
    escalation_id: Uuid
    response: str = Field(min_length=1, max_length=RESPONSE_MAX)


class EscalationWait(Params):
    """Wait until the escalation is answered (or expires), at most ``wait`` s."""

    escalation_id: Uuid
    wait: float = Field(gt=0)


METHODS: dict[str, type[BaseModel]] = {
    "escalations.create": EscalationCreate,
    "escalations.list": EscalationList,
    "escalations.get": EscalationGet,
    "escalations.respond": EscalationRespond,
    "escalations.wait": EscalationWait,
}
