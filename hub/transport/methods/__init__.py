"""JSON-RPC handlers, one module per concern. Importing this package
registers them all."""

from hub.transport.methods import escalations, policies, session

__all__ = ["escalations", "policies", "session"]
