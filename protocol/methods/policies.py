"""Project policy: invariants every agent follows and a playbook per role."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from protocol.schema import NoParams, Params

ROLE_RE = r"^[a-z][a-z0-9_-]{0,31}$"
INVARIANT_ID_RE = r"^[a-z0-9][a-z0-9._-]{0,63}$"
TITLE_MAX = 200
BODY_MAX = 20_000
MAX_INVARIANTS = 50
MAX_ROLES = 20

RoleName = Annotated[str, StringConstraints(pattern=ROLE_RE)]


class Invariant(Params):
    id: Annotated[str, StringConstraints(pattern=INVARIANT_ID_RE)]
    title: str = Field(min_length=1, max_length=TITLE_MAX)
    body_md: str = Field(max_length=BODY_MAX)


class RolePlaybook(Params):
    title: str = Field(min_length=1, max_length=TITLE_MAX)
    playbook_md: str = Field(max_length=BODY_MAX)


class PolicyGet(Params):
    #: Adds ``selected_role`` for this role (case-insensitive).
    role: str | None = Field(default=None, min_length=1, max_length=32)
    #: With ``role``: ``roles`` holds only the selected one.
    only_selected: bool = False


class PolicyCreate(Params):
    invariants: list[Invariant] = Field(max_length=MAX_INVARIANTS)
    roles: dict[RoleName, RolePlaybook] = Field(max_length=MAX_ROLES)
    #: Make the new version the active one (the default).
    activate: bool = True


class PolicyActivate(Params):
    version: int = Field(ge=1)


class PolicyVersions(Params):
    limit: int = Field(default=100, ge=1, le=500)


METHODS: dict[str, type[BaseModel]] = {
    "policy.get": PolicyGet,
    "policy.versions": PolicyVersions,
    "policy.create": PolicyCreate,
    "policy.activate": PolicyActivate,
    "policy.reset": NoParams,
}
