"""File reservations: short-lived advisory locks on repo paths and globs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from protocol.schema import Alias, Params, Retryable

MAX_PATHS = 500
PATH_MAX = 1024
REASON_MAX = 500
BEAD_ID_MAX = 100
METADATA_MAX_BYTES = 16 * 1024

#: Path syntax and normalisation are checked by the hub (INVALID_PARAMS with
#: the offending path), so the models only bound the sizes.
Paths = list[str]


class ReservationAcquire(Retryable):
    paths: Paths = Field(min_length=1, max_length=MAX_PATHS)
    #: Default and maximum are hub settings (300 s and 3600 s by default).
    ttl_seconds: int | None = Field(default=None, ge=1)
    exclusive: bool = True
    reason: str | None = Field(default=None, max_length=REASON_MAX)
    bead_id: str | None = Field(default=None, min_length=1, max_length=BEAD_ID_MAX)
    metadata: dict[str, Any] | None = None
    #: Seconds to wait in line for conflicting paths (hub setting
    #: ``queue_max_wait_seconds`` at most).
    wait: float | None = Field(default=None, ge=0)


class ReservationRenew(Params):
    paths: Paths = Field(min_length=1, max_length=MAX_PATHS)
    ttl_seconds: int | None = Field(default=None, ge=1)


class ReservationRelease(Retryable):
    paths: Paths = Field(min_length=1, max_length=MAX_PATHS)


class ReservationCheck(Params):
    paths: Paths = Field(min_length=1, max_length=MAX_PATHS)


class QueueList(Params):
    """Who waits in line: ``kind`` ``reservation`` or ``claim`` (None: both)."""

    kind: Literal["reservation", "claim"] | None = None


class ReservationRevoke(Params):
    """Exact patterns (``paths``), everything starting with ``prefix``
    (``""`` is every reservation of the project), or both."""

    paths: Paths | None = Field(default=None, min_length=1, max_length=MAX_PATHS)
    prefix: str | None = Field(default=None, max_length=PATH_MAX)

    @model_validator(mode="after")
    def _something(self) -> ReservationRevoke:
        if self.paths is None and self.prefix is None:
            raise ValueError('give `paths` or `prefix` (`""` revokes every reservation)')
        return self


class ReservationList(Params):
    holder_alias: Alias | None = None
    path_prefix: str | None = Field(default=None, max_length=PATH_MAX)


METHODS: dict[str, type[BaseModel]] = {
    "reservations.acquire": ReservationAcquire,
    "reservations.renew": ReservationRenew,
    "reservations.release": ReservationRelease,
    "reservations.revoke": ReservationRevoke,
    "reservations.list": ReservationList,
    "reservations.check": ReservationCheck,
    "queue.list": QueueList,
}
