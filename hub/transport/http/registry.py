"""A small route registry: each route declares its verb, path, request
model(s), query model and response model once; the same declaration
builds the Starlette route and the OpenAPI document.

    @api.post("/v1/projects/ensure", body=EnsureProjectRequest,
              response=EnsureProjectResponse, summary="...")
    async def ensure_project(call: HttpCall, body: EnsureProjectRequest) -> dict: ...

The handler gets an :class:`HttpCall` (hub, authenticated actor, request,
path parameters) and, as keyword arguments, the parsed ``body`` and
``query``. It returns a JSON-able value (sent with ``status``) or a
:class:`~starlette.responses.Response`.

A route may accept several body shapes (bdh and the aw library reach the
reservation routes with different bodies): ``body=(A, B)`` picks the first
model whose required fields are all present.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub import logs, metrics
from hub.services import audit, idempotency, limits
from hub.services.context import Actor, Hub
from hub.transport.http.base import (
    ORJSONResponse,
    actor_of,
    client_address,
    endpoint,
    hub_of,
    read_json,
    read_query,
)
from hub.transport.rpc import invalid_field, parse_params
from protocol.errors import RpcError, invalid_params
from protocol.schema import unstorable

Handler = Callable[..., Awaitable[Any]]


@dataclass(slots=True)
class HttpCall:
    hub: Hub
    #: None only on the routes declared with ``auth=False``.
    actor_or_none: Actor | None
    request: Request

    @property
    def actor(self) -> Actor:
        assert self.actor_or_none is not None, "route declared auth=False"
        return self.actor_or_none

    def path(self, name: str) -> str:
        value = str(self.request.path_params[name])
        found = unstorable(value, name)
        if found is not None:
            raise invalid_field(*found)
        return value

    @property
    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` header (routes declared ``retryable``)."""
        return self.request.headers.get("idempotency-key")


@dataclass(slots=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    bodies: tuple[type[BaseModel], ...] = ()
    query: type[BaseModel] | None = None
    #: The answer's model; a tuple when the body shape picks the answer's.
    response: type[BaseModel] | tuple[type[BaseModel], ...] | None = None
    status: int = 200
    #: Extra documented answers: status -> description.
    errors: dict[int, str] = field(default_factory=dict)
    auth: bool = True
    #: Human-only (for the docs and the generated security tests; the
    #: service decides, from the Actor).
    human: bool = False
    media_type: str = "application/json"
    #: The rate limit (hub.services.limits.RULES) counted per client
    #: address before anything else; authenticated calls also count
    #: against their key's ``key`` allowance.
    rate: str | None = None
    #: A state-changing route that honours an ``Idempotency-Key`` header.
    retryable: bool = False

    @property
    def name(self) -> str:
        return self.handler.__name__


def required_fields(model: type[BaseModel]) -> set[str]:
    return {name for name, f in model.model_fields.items() if f.is_required()}


def pick_shape(models: tuple[type[BaseModel], ...], data: dict[str, Any]) -> type[BaseModel]:
    for model in models:
        if required_fields(model) <= data.keys():
            return model
    shapes = " or ".join(
        f"{m.__name__} (needs {', '.join(sorted(required_fields(m)))})" for m in models
    )
    raise invalid_params(f"the body matches no accepted shape: {shapes}")


class Api:
    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        body: type[BaseModel] | tuple[type[BaseModel], ...] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | tuple[type[BaseModel], ...] | None = None,
        status: int = 200,
        errors: dict[int, str] | None = None,
        auth: bool = True,
        human: bool = False,
        media_type: str = "application/json",
        rate: str | None = "",
        retryable: bool = False,
    ) -> Callable[[Handler], Handler]:
        """``rate``: the per-address limit; by default ``anonymous`` for a
        route without auth, none otherwise (the key's limit applies)."""
        if rate == "":
            rate = None if auth else "anonymous"
        bodies = body if isinstance(body, tuple) else (body,) if body is not None else ()

        def register(handler: Handler) -> Handler:
            self.operations.append(
                Operation(
                    method=method,
                    path=path,
                    handler=handler,
                    summary=summary,
                    tag=tag,
                    bodies=bodies,
                    query=query,
                    response=response,
                    status=status,
                    errors=errors or {},
                    auth=auth,
                    human=human,
                    media_type=media_type,
                    rate=rate,
                    retryable=retryable,
                )
            )
            return handler

        return register

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)

    def routes(self) -> list[Route]:
        """One Starlette route per path, dispatching on the verb."""
        by_path: dict[str, dict[str, Operation]] = {}
        for op in self.operations:
            by_path.setdefault(op.path, {})[op.method] = op
        return [Route(path, _dispatcher(ops), methods=list(ops)) for path, ops in by_path.items()]


def _dispatcher(ops: dict[str, Operation]) -> Callable[[Request], Awaitable[Response]]:
    runners = {method: _runner(op) for method, op in ops.items()}

    async def dispatch(request: Request) -> Response:
        # Starlette answers HEAD with the GET route.
        method = "GET" if request.method == "HEAD" else request.method
        return await runners[method](request)

    return dispatch


def _runner(op: Operation) -> Callable[[Request], Awaitable[Response]]:
    #: Routes are named by verb and path template in metrics and logs.
    label = f"{op.method} {op.path}"
    timer = metrics.METHOD_SECONDS.child(label, "http")

    async def serve(request: Request, context: logs.CallContext) -> Response:
        hub = hub_of(request)
        if op.rate is not None:
            await limits.check(hub, op.rate, client_address(request))
        # Authenticate before reading the body: an anonymous caller learns
        # nothing about the shape of a route's input.
        actor = await actor_of(request) if op.auth else None
        if actor is not None:
            context.project = actor.project_slug
            context.agent = actor.alias
            await limits.check(hub, "key", limits.caller_key(actor))
        call = HttpCall(hub, actor, request)
        kwargs: dict[str, Any] = {}
        data: Any = None
        if op.bodies:
            data = await read_json(request)
            model = op.bodies[0] if len(op.bodies) == 1 else pick_shape(op.bodies, data)
            kwargs["body"] = parse_params(model, data)
        if op.query is not None:
            kwargs["query"] = read_query(request, op.query)
        waits = bool(getattr(kwargs.get("body"), "wait", None))
        key = call.idempotency_key if op.retryable else None

        async def handle() -> Any:
            if waits:
                # A long request: the client going away ends it (and its place in line).
                return await _until_disconnected(request, op.handler(call, **kwargs))
            if key is not None:
                return await _once(call, op, key, data, kwargs)
            return await op.handler(call, **kwargs)

        if actor is not None and actor.is_human and not audit.is_read(f"{op.method} {op.path}"):
            result = await _audited(op, call, kwargs, handle)
        else:
            result = await handle()
        if isinstance(result, Response):
            return result
        return ORJSONResponse(result, status_code=op.status)

    @endpoint
    async def run(request: Request) -> Response:
        started = time.perf_counter()
        # This request's task: its lines, and uvicorn's access line, name it.
        context = logs.CallContext("", "", label, started)
        logs.CALL.set(context)
        try:
            response = await serve(request, context)
        except RpcError as exc:
            timer.observe(time.perf_counter() - started)
            metrics.METHOD_ERRORS.labels(label, "http", str(int(exc.code))).inc()
            raise
        timer.observe(time.perf_counter() - started)
        return response

    run.__name__ = op.name
    return run


class _Unstored(Exception):
    """A handler answered with a ready Response (an aw-shape 409): nothing
    changed, so nothing is kept for its key."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def _once(call: HttpCall, op: Operation, key: str, data: Any, kwargs: dict[str, Any]) -> Any:
    """The route's answer, once per ``Idempotency-Key`` (hub.services.idempotency)."""

    async def answer() -> Any:
        result = await op.handler(call, **kwargs)
        if isinstance(result, Response):
            raise _Unstored(result)
        return result

    request = {"path": call.request.url.path, "body": data if op.bodies else None}
    try:
        return await idempotency.run(
            call.hub, call.actor, f"{op.method} {op.path}", key, request, answer
        )
    except _Unstored as unstored:
        return unstored.response


async def _until_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """``await work``, cancelled if the client disconnects first."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return Response(status_code=499)
    return task.result()


async def _audited(
    op: Operation, call: HttpCall, kwargs: dict[str, Any], handle: Callable[[], Awaitable[Any]]
) -> Any:
    """A human's call, recorded in the audit trail with its outcome."""
    action = f"{op.method} {op.path}"
    body = kwargs.get("body")
    detail = {
        **call.request.path_params,
        **(audit.summary(body.model_dump()) if isinstance(body, BaseModel) else {}),
    }
    try:
        result = await handle()
    except RpcError as exc:
        await audit.record(
            call.hub, call.actor, action, outcome=audit.outcome_of(exc), detail=detail
        )
        raise
    await audit.record(call.hub, call.actor, action, detail=detail)
    return result


#: The shim's routes register here (see hub.transport.http.__init__).
api = Api()
