"""JSON-RPC handlers, one module per concern. Importing this package
registers them all."""

from hub.transport.methods import chat, escalations, mail, policies, session

__all__ = ["chat", "escalations", "mail", "policies", "session"]
