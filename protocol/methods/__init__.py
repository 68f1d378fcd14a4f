"""The method catalogue: method name -> params model.

One module per concern; each exports ``METHODS``. Results are plain JSON
objects documented in docs/protocol.md.
"""

from __future__ import annotations

from pydantic import BaseModel

from protocol.methods import (
    activity,
    authority,
    beads,
    chat,
    escalations,
    mail,
    news,
    policies,
    reservations,
    search,
    session,
    team,
    webhooks,
)

CATALOGUE: dict[str, type[BaseModel]] = {}
for _module in (
    session, escalations, policies, mail, chat, activity, beads, reservations,
    search, team, webhooks, news, authority,
):  # fmt: skip
    CATALOGUE.update(_module.METHODS)

#: Methods only a human may call (some also an agent a human granted the
#: coordinator role). The services decide, from the Actor; this list is for
#: the docs and for the generated security tests (tests/test_security.py).
HUMAN_ONLY: frozenset[str] = frozenset(
    {
        "escalations.respond",
        "policy.create",
        "policy.activate",
        "policy.reset",
        "reservations.revoke",
        *authority.HUMAN_ONLY,
    }
)

__all__ = ["CATALOGUE", "HUMAN_ONLY"]
