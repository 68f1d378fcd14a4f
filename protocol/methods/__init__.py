"""The method catalogue: method name -> params model.

One module per concern; each exports ``METHODS``. Results are plain JSON
objects documented in docs/protocol.md.
"""

from __future__ import annotations

from pydantic import BaseModel

from protocol.methods import (
    activity,
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
    search, team, webhooks, news,
):  # fmt: skip
    CATALOGUE.update(_module.METHODS)

__all__ = ["CATALOGUE"]
