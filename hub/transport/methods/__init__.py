"""JSON-RPC handlers, one module per concern. Importing this package
registers them all."""

from hub.transport.methods import activity, chat, escalations, mail, policies, session

__all__ = ["activity", "chat", "escalations", "mail", "policies", "session"]
