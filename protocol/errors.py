"""Stable JSON-RPC error codes.

The first five are defined by JSON-RPC 2.0. The application codes live in
the implementation-defined range (-32000 to -32099) and never change meaning:
clients may switch on them.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    UNAUTHORIZED = -32001
    FORBIDDEN = -32003
    NOT_FOUND = -32004
    CONFLICT = -32009
    #: A resume cursor older than the retention window: resync from now.
    CURSOR_EXPIRED = -32010
    TOO_LARGE = -32013
    RATE_LIMITED = -32029
    UNAVAILABLE = -32050


#: The HTTP status the shim answers for each code.
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.PARSE_ERROR: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.METHOD_NOT_FOUND: 404,
    ErrorCode.INVALID_PARAMS: 422,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.CURSOR_EXPIRED: 410,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
}


class RpcError(Exception):
    """An error with a stable code, raised by services and by the client.

    Services raise it (through the helpers below); transports turn it into a
    JSON-RPC error object or an HTTP status with a JSON body.
    """

    def __init__(self, code: ErrorCode | int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code) if code in ErrorCode._value2member_map_ else code
        self.message = message
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": int(self.code), "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)  # type: ignore[call-overload]

    def __repr__(self) -> str:
        return f"RpcError({int(self.code)}, {self.message!r})"


def not_found(message: str, **data: Any) -> RpcError:
    return RpcError(ErrorCode.NOT_FOUND, message, data or None)


def conflict(message: str, **data: Any) -> RpcError:
    return RpcError(ErrorCode.CONFLICT, message, data or None)


def invalid_params(message: str, **data: Any) -> RpcError:
    return RpcError(ErrorCode.INVALID_PARAMS, message, data or None)


def forbidden(message: str, **data: Any) -> RpcError:
    return RpcError(ErrorCode.FORBIDDEN, message, data or None)


def unauthorized(message: str = "missing or invalid api key") -> RpcError:
    return RpcError(ErrorCode.UNAUTHORIZED, message)


def unavailable(message: str = "the hub's database is unavailable, try again") -> RpcError:
    return RpcError(ErrorCode.UNAVAILABLE, message)
