"""The BeadHub wire contract: JSON-RPC 2.0 envelope, error codes, method
catalogue and a small asyncio client. No I/O lives here except in
:mod:`protocol.client`."""

from protocol.errors import ErrorCode, RpcError

__all__ = ["ErrorCode", "RpcError"]
