"""JSON-RPC handlers, one module per concern. Importing this package
registers them all."""

from hub.transport.methods import (
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

__all__ = [
    "activity",
    "authority",
    "beads",
    "chat",
    "escalations",
    "mail",
    "news",
    "policies",
    "reservations",
    "search",
    "session",
    "team",
    "webhooks",
]
