"""``/mcp``: the tools over Streamable HTTP, stateless.

Every request is authenticated by the agent's key (``Authorization:
Bearer``) before the MCP SDK sees it, counted against the limits on
refused credentials (per client address) and on calls (per key, the
WebSocket calls' allowance: limits.spend_call), and served on its own: no MCP
session lives on an instance, so behind a load balancer any instance
answers any call. The tools call the services in-process
(:func:`hub.transport.rpc.dispatch`), as the WebSocket methods do. A wait
(``chat_send`` with ``wait``, ``chat_wait``, ``escalate``) runs in the
request; its state is in the store and it is woken by the bus, so if the
client's connection drops, ``chat_wait`` on any instance picks it up.
A client that declares the Tasks extension (2026-07-28) gets a task for a
waiting call instead (hub.transport.mcp.hub_tasks): kept in the store, so
``tasks/get`` and ``tasks/cancel`` work on any instance.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from hub.services import auth, limits
from hub.services.context import Actor, Hub
from hub.store import database_unavailable
from hub.transport.http.base import error_response
from hub.transport.mcp import server
from hub.transport.mcp.hub_tasks import StoreTasks
from hub.transport.rpc import Call, dispatch
from protocol.errors import ErrorCode, RpcError

PATH = "/mcp"
_ACTOR = "beadhub.actor"


class HubCaller:
    """Runs the tools' methods for one authenticated agent, in-process."""

    def __init__(self, hub: Hub, actor: Actor) -> None:
        self._call = Call(hub, actor)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        return await dispatch(self._call, method, params)

    # Cancelling the request cancels the service call, which ends its wait.
    wait = call


def _actor_for(ctx: ServerRequestContext[Any, Any]) -> tuple[Hub, Actor]:
    request = ctx.request
    scope = getattr(request, "scope", None) or {}
    actor = scope.get(_ACTOR)
    if actor is None:
        raise RpcError(ErrorCode.UNAUTHORIZED, "no api key on this request")
    return scope["app"].state.hub, actor


def _caller_for(ctx: ServerRequestContext[Any, Any]) -> HubCaller:
    return HubCaller(*_actor_for(ctx))


class Endpoint:
    """The ``/mcp`` route of one app; :meth:`running` belongs in its lifespan."""

    def __init__(self) -> None:
        self.tasks = StoreTasks(_actor_for)
        self.manager = StreamableHTTPSessionManager(
            app=server.build(_caller_for, self.tasks),
            stateless=True,
            # One JSON answer per POST; progress of a long wait needs the
            # SSE answer, which the client asks for in its Accept header.
            json_response=False,
        )
        self._app = StreamableHTTPASGIApp(self.manager)
        self.route = Route(PATH, self, methods=["GET", "POST", "DELETE"])

    @contextlib.asynccontextmanager
    async def running(self, hub: Hub) -> AsyncIterator[None]:
        async with self.tasks.running(hub), self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub: Hub = scope["app"].state.hub
        try:
            actor = await _admit(hub, scope)
        except RpcError as exc:
            await error_response(exc)(scope, receive, send)
            return
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            body = {"detail": "the hub's database is unavailable", "code": -32050}
            await JSONResponse(body, status_code=503)(scope, receive, send)
            return
        scope[_ACTOR] = actor
        await self._app(scope, receive, send)


async def _admit(hub: Hub, scope: Scope) -> Actor:
    """The agent a request's key names, if its address and key are within
    their limits."""
    headers = dict(scope.get("headers") or [])
    token = auth.bearer_token((headers.get(b"authorization") or b"").decode("latin-1"))
    client = scope.get("client")
    address = client[0] if client else "unknown"
    actor = await limits.authenticated(hub, address, lambda: auth.authenticate(hub, token))
    if actor.is_human:
        raise RpcError(ErrorCode.FORBIDDEN, "/mcp is for agents' api keys")
    limits.spend_call(hub, limits.caller_key(actor))
    return actor
