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
        ok["content"] = {op.media_type: {"schema": components.ref(op.response, "serialization")}}
    responses: dict[str, Any] = {str(op.status): ok}
    for status, description in op.errors.items():
        responses[str(status)] = _error(description)
    if op.bodies or op.query is not None:
        responses.setdefault("400", _error("the body is not JSON"))
        responses.setdefault("422", _error("a field is missing or has the wrong type"))
    if op.auth:
        responses.setdefault("401", _error("missing or invalid api key"))
        doc["security"] = [{"bearerAuth": []}]
    doc["responses"] = responses
    return doc


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
