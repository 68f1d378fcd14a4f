"""Beads issues (synced from ``.beads/issues.jsonl``) and claims on them."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from protocol.schema import Params, Retryable

BEAD_ID_MAX = 200
BEAD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
MAX_DELETED_IDS = 10_000
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000

BeadId = Annotated[
    str, StringConstraints(min_length=1, max_length=BEAD_ID_MAX, pattern=BEAD_ID_RE.pattern)
]
#: The statuses the hub keeps; any other bd status is stored as ``open``.
IssueStatus = Literal["open", "in_progress", "blocked", "closed"]
SyncMode = Literal["full", "incremental"]


class BeadsSync(Params):
    """``full``: ``issues_jsonl`` is the whole file; issues the hub has for
    this repo but the file lacks are deleted. ``incremental``:
    ``changed_issues`` (JSONL) are upserted and ``deleted_ids`` removed."""

    mode: SyncMode
    issues_jsonl: str | None = None
    changed_issues: str | None = None
    deleted_ids: list[BeadId] | None = Field(default=None, max_length=MAX_DELETED_IDS)


class BeadsList(Params):
    status: IssueStatus | None = None
    limit: int = Field(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)


class BeadsGet(Params):
    bead_id: BeadId


class BeadsReady(Params):
    limit: int = Field(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)


class ClaimsClaim(Retryable):
    bead_id: BeadId
    #: Seconds to wait in line when another agent holds it (hub setting
    #: ``queue_max_wait_seconds`` at most).
    wait: float | None = Field(default=None, ge=0)


class ClaimsRelease(Retryable):
    bead_id: BeadId


class ClaimsList(Params):
    pass


METHODS: dict[str, type[BaseModel]] = {
    "beads.sync": BeadsSync,
    "beads.list": BeadsList,
    "beads.get": BeadsGet,
    "beads.ready": BeadsReady,
    "claims.claim": ClaimsClaim,
    "claims.release": ClaimsRelease,
    "claims.list": ClaimsList,
}
