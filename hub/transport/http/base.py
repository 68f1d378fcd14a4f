"""What every HTTP route shares: JSON responses, errors, auth, body and
query parsing.

Errors are JSON bodies ``{"detail": "...", "code": <json-rpc code>}`` with
the matching 4xx/5xx, so bdh can show them as
``BeadHub error (status N): <body>``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hub.services import auth, limits
from hub.services.context import Actor, Hub
from hub.store import database_unavailable
from hub.transport.rpc import parse_params
from protocol.errors import ErrorCode, RpcError, invalid_params

logger = logging.getLogger("beadhub.http")

M = TypeVar("M", bound=BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: RpcError) -> JSONResponse:
    body: dict[str, Any] = {"detail": exc.message, "code": int(exc.code)}
    if exc.data is not None:
        body["data"] = exc.data
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    if exc.code == ErrorCode.RATE_LIMITED and isinstance(exc.data, dict):
        headers = {"Retry-After": str(exc.data.get("retry_after", 1))}
    return ORJSONResponse(body, status_code=exc.http_status, headers=headers)


def endpoint(handler: Endpoint) -> Endpoint:
    """Turn service errors into JSON error responses."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except RpcError as exc:
            return error_response(exc)
        except Exception as exc:
            if database_unavailable(exc):
                return error_response(RpcError(ErrorCode.UNAVAILABLE, "database unavailable"))
            logger.exception("internal error on %s %s", request.method, request.url.path)
            return error_response(RpcError(ErrorCode.INTERNAL_ERROR, "internal error"))

    return wrapped


def hub_of(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def client_address(request: Request) -> str:
    """Who the rate limits per address count (behind a trusted proxy,
    uvicorn has already put the forwarded address here)."""
    return request.client.host if request.client is not None else "unknown"


async def actor_of(request: Request) -> Actor:
    hub = hub_of(request)
    token = auth.bearer_token(request.headers.get("authorization"))
    return await limits.authenticated(
        hub, client_address(request), lambda: auth.authenticate(hub, token)
    )


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` (bdh posts
    ``null`` or nothing to calls that take no body)."""
    hub = hub_of(request)
    raw = await request.body()
    if len(raw) > hub.settings.max_request_bytes:
        raise RpcError(ErrorCode.TOO_LARGE, f"body over {hub.settings.max_request_bytes} bytes")
    try:
        data = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as exc:
        raise RpcError(ErrorCode.PARSE_ERROR, f"body is not valid JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise invalid_params("the body must be a JSON object")
    return data


async def read_body(request: Request, model: type[M]) -> M:
    return parse_params(model, await read_json(request))


def read_query(request: Request, model: type[M]) -> M:
    """Query parameters through a model: pydantic's lax mode reads
    ``true``/``false`` and numbers from their text."""
    return parse_params(model, dict(request.query_params))


class Body(BaseModel):
    """HTTP bodies ignore unknown fields: bdh sends more than a route reads."""

    model_config = ConfigDict(extra="ignore")


class Query(BaseModel):
    """Query parameters; unknown ones are ignored like any HTTP server does."""

    model_config = ConfigDict(extra="ignore")
