"""``GET /openapi.json``: the OpenAPI 3.1 document, generated from the
route registry and the pydantic models each route declares."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from hub.transport.http.registry import Api, Operation

_PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "integer", "description": "the JSON-RPC error code"},
        "data": {"description": "details: the fields at fault, the holder of a conflict"},
    },
    "required": ["detail"],
}


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}

    def ref(self, model: type[BaseModel], mode: str = "validation") -> dict[str, str]:
        name = model.__name__
        if name not in self.schemas:
            schema = model.model_json_schema(
                ref_template="#/components/schemas/{model}",
                mode=mode,  # type: ignore[arg-type]
            )
            self.schemas.update(schema.pop("$defs", {}))
            self.schemas[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(op.path)
    ]
    if op.query is not None:
        schema = op.query.model_json_schema()
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": {k: v for k, v in prop.items() if k != "description"},
            }
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    return params


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _operation(op: Operation, components: _Components) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.handler.__doc__:
        doc["description"] = " ".join(op.handler.__doc__.split())
    params = _parameters(op)
    if params:
        doc["parameters"] = params
    if op.bodies:
        refs = [components.ref(m) for m in op.bodies]
        schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    ok: dict[str, Any] = {"description": "OK"}
    if op.response is not None:
        models = op.response if isinstance(op.response, tuple) else (op.response,)
        refs = [components.ref(m, "serialization") for m in models]
        ok["content"] = {op.media_type: {"schema": refs[0] if len(refs) == 1 else {"oneOf": refs}}}
    responses: dict[str, Any] = {str(op.status): ok}
    for status, description in op.errors.items():
        responses[str(status)] = _error(description)
    takes_input = bool(op.bodies or op.query is not None or _PATH_PARAM.search(op.path))
    if takes_input:
        responses.setdefault("400", _error("the body is not JSON"))
        responses.setdefault("422", _error("a field is missing, of the wrong type or refused"))
    if op.bodies:
        responses.setdefault("413", _error("the body is over the size bound"))
        responses.setdefault("415", _error("the body is not Content-Type: application/json"))
    if op.auth:
        responses.setdefault("401", _error("missing or invalid api key"))
        # Every authenticated route may name an agent or a row the key
        # cannot act on (a workspace_id of another agent, another
        # project's ids) or need a human.
        responses.setdefault("403", _error("the key may not do this"))
        responses.setdefault("404", _error("not found in the key's project"))
        doc["security"] = [{"bearerAuth": []}]
    for code, description in _EVERY_ROUTE.items():
        responses.setdefault(code, _error(description))
    if op.auth or op.rate is not None:
        responses.setdefault("429", _RATE_LIMITED)
    if op.method != "GET" or op.auth:
        # Anything that reads the store answers 503 while it is down.
        responses.setdefault("503", _error("the database is unavailable; retry"))
    doc["responses"] = responses
    return doc


#: What the hub answers before any route runs (hub.transport.guard,
#: hub.transport.http_protocol), so every route can answer it.
_EVERY_ROUTE = {
    "421": "the Host header names a host this hub does not answer for",
    "431": "the request headers are over the size bound",
}

_RATE_LIMITED: dict[str, Any] = {
    "description": "rate limited (docs/security.md); retry after Retry-After seconds",
    "headers": {
        "Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}},
    },
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def build(api: Api, *, title: str = "BeadHub", version: str = "0.1.0") -> dict[str, Any]:
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for op in api.operations:
        path = _PATH_PARAM.sub(r"{\1}", op.path)
        paths.setdefault(path, {})[op.method.lower()] = _operation(op, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "The bdh-compatible HTTP shim. Every call but POST /v1/init needs "
                "Authorization: Bearer <api_key>; a key sees only its own project. "
                "Errors are JSON bodies {detail, code, data}."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
