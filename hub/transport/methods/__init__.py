"""JSON-RPC handlers, one module per concern. Importing this package
registers them all."""

from hub.transport.methods import session

__all__ = ["session"]
