"""JSON-RPC 2.0 envelopes, encoded with orjson.

Only what the hub and its clients exchange: requests with an ``id``,
responses, and server-to-client notifications (``method: "event"``).
Batches are not supported; a batch gets an ``INVALID_REQUEST`` error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from protocol.errors import ErrorCode, RpcError

JSONRPC = "2.0"
EVENT_METHOD = "event"

RequestId = int | str


@dataclass(slots=True)
class Request:
    id: RequestId | None
    method: str
    params: dict[str, Any]


def encode(obj: Any) -> bytes:
    return orjson.dumps(obj)


def decode(data: bytes | str) -> Any:
    return orjson.loads(data)


def parse_request(raw: bytes | str) -> Request:
    """Parse one request frame, raising :class:`RpcError` with the id known
    so far attached as ``error.request_id``."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RpcError(ErrorCode.PARSE_ERROR, f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RpcError(ErrorCode.INVALID_REQUEST, "a request must be a JSON object")
    request_id = obj.get("id")
    if (request_id is not None and not isinstance(request_id, (int, str))) or isinstance(
        request_id, bool
    ):
        raise RpcError(ErrorCode.INVALID_REQUEST, "id must be a string or an integer")
    method = obj.get("method")
    if obj.get("jsonrpc") != JSONRPC or not isinstance(method, str):
        error = RpcError(
            ErrorCode.INVALID_REQUEST, 'a request needs "jsonrpc": "2.0" and a string "method"'
        )
        error.request_id = request_id  # type: ignore[attr-defined]
        raise error
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        error = RpcError(ErrorCode.INVALID_PARAMS, "params must be an object (by-name params)")
        error.request_id = request_id  # type: ignore[attr-defined]
        raise error
    return Request(request_id, method, params)


def request(request_id: RequestId, method: str, params: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps(
        {"jsonrpc": JSONRPC, "id": request_id, "method": method, "params": params or {}}
    )


def result(request_id: RequestId | None, value: Any) -> bytes:
    return orjson.dumps({"jsonrpc": JSONRPC, "id": request_id, "result": value})


def error(request_id: RequestId | None, err: RpcError) -> bytes:
    return orjson.dumps({"jsonrpc": JSONRPC, "id": request_id, "error": err.to_dict()})


def event(params: dict[str, Any]) -> bytes:
    return orjson.dumps({"jsonrpc": JSONRPC, "method": EVENT_METHOD, "params": params})
