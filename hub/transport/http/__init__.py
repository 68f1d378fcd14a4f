"""HTTP routes: health, onboarding and the bdh-compatible REST shim, plus
``GET /openapi.json`` generated from the same route declarations.

Each module registers its routes on :data:`registry.api`; every route is a
thin wrapper over hub.services (parse -> call the service -> shape the
answer). See ``../shared/bdh-contract.md`` (beside the repository) for what bdh sends and reads.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.transport.http import (  # noqa: F401  (register routes)
    authority,
    beads,
    delivery,
    governance,
    messaging,
    monitoring,
    onboarding,
    openapi,
    reservations,
    search,
    team,
)
from hub.transport.http.base import (
    Body,
    ORJSONResponse,
    actor_of,
    endpoint,
    error_response,
    hub_of,
    read_body,
    read_json,
    read_query,
)
from hub.transport.http.registry import Api, HttpCall, api

__all__ = [
    "Api",
    "Body",
    "HttpCall",
    "ORJSONResponse",
    "actor_of",
    "api",
    "endpoint",
    "error_response",
    "hub_of",
    "read_body",
    "read_json",
    "read_query",
    "routes",
]

_document: bytes | None = None


async def openapi_json(request: Request) -> Response:
    global _document
    if _document is None:
        _document = orjson.dumps(openapi.build(api))
    return Response(_document, media_type="application/json")


routes: list[Route] = [
    *api.routes(),
    Route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=False),
]
