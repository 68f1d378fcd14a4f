"""HTTP routes: health, onboarding and the bdh-compatible REST shim.

Every route is a thin wrapper over hub.services. Errors are JSON bodies
``{"detail": "...", "code": <json-rpc code>}`` with the matching 4xx/5xx.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.services import auth, projects, tickets
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
    return ORJSONResponse(body, status_code=exc.http_status)


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
    return request.app.state.hub


async def actor_of(request: Request) -> Actor:
    token = auth.bearer_token(request.headers.get("authorization"))
    return await auth.authenticate(hub_of(request), token)


async def read_body(request: Request, model: type[M]) -> M:
    hub = hub_of(request)
    raw = await request.body()
    if len(raw) > hub.settings.max_request_bytes:
        raise RpcError(ErrorCode.TOO_LARGE, f"body over {hub.settings.max_request_bytes} bytes")
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise RpcError(ErrorCode.PARSE_ERROR, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid_params("the body must be a JSON object")
    return parse_params(model, data)


class Body(BaseModel):
    """HTTP bodies ignore unknown fields: bdh sends more than a route reads."""

    model_config = ConfigDict(extra="ignore")


# -- health ---------------------------------------------------------------


async def health(request: Request) -> Response:
    hub = hub_of(request)
    return ORJSONResponse({"status": "ok", "instance_id": hub.settings.instance_id})


async def ready(request: Request) -> Response:
    hub = hub_of(request)
    database = await hub.store.ping()
    bus = await hub.bus.ping()
    ok = database and bus
    body = {
        "status": "ready" if ok else "unavailable",
        "database": "ok" if database else "unavailable",
        "bus": "ok" if bus else "unavailable",
        "instance_id": hub.settings.instance_id,
    }
    return ORJSONResponse(body, status_code=200 if ok else 503)


# -- onboarding -------------------------------------------------------------


class InitBody(Body):
    project_slug: str = Field(default="", max_length=64)
    project_name: str = Field(default="", max_length=200)
    repo_origin: str = Field(default="", max_length=1000)
    alias: str | None = Field(default=None, max_length=64)
    human_name: str = Field(default="", max_length=200)
    role: str = Field(default="", max_length=64)
    email: str = Field(default="", max_length=200)
    hostname: str = Field(default="", max_length=200)
    workspace_path: str = Field(default="", max_length=1000)
    agent_type: str = Field(default="agent", max_length=64)
    program: str = Field(default="", max_length=200)
    model: str = Field(default="", max_length=200)


@endpoint
async def init(request: Request) -> Response:
    body = await read_body(request, InitBody)
    result = await projects.init(hub_of(request), projects.InitRequest(**body.model_dump()))
    return ORJSONResponse(result, status_code=200)


class TicketBody(Body):
    api_key: str = Field(min_length=1, max_length=200)


@endpoint
async def issue_ticket(request: Request) -> Response:
    """The dashboard trades an api key for a browser ticket."""
    body = await read_body(request, TicketBody)
    return ORJSONResponse(await tickets.issue(hub_of(request), body.api_key))


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/v1/init", init, methods=["POST"]),
    Route("/v1/auth/ticket", issue_ticket, methods=["POST"]),
]
