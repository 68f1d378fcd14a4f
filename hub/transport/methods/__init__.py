"""JSON-RPC handlers, one module per concern. Importing this package
registers them all."""

from hub.transport.methods import (
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

__all__ = [
    "activity",
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
