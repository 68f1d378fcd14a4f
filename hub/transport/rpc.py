"""The JSON-RPC method registry shared by every transport.

A handler takes a :class:`Call` and its validated params model and returns a
JSON-able result; it only translates between the wire and a service call.
Params models come from the protocol catalogue, so the names and schemas on
the wire are defined once, in :mod:`protocol.methods`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from hub.services import audit, idempotency
from hub.services.context import Actor, Hub
from protocol.errors import ErrorCode, RpcError
from protocol.methods import CATALOGUE
from protocol.schema import unstorable

if TYPE_CHECKING:
    from hub.transport.ws import AgentSession

P = TypeVar("P", bound=BaseModel)
Handler = Callable[["Call", Any], Awaitable[Any]]


@dataclass(slots=True)
class Call:
    hub: Hub
    actor: Actor
    #: The WebSocket session the call came on, when there is one.
    session: AgentSession | None = None


HANDLERS: dict[str, Handler] = {}
#: Methods whose handler hands ``idempotency_key`` to its service, which
#: makes the call retry-safe itself (mail.send: in its group commit).
SELF_KEYED: set[str] = set()


def method(name: str, *, self_keyed: bool = False) -> Callable[[Handler], Handler]:
    if name not in CATALOGUE:
        raise KeyError(f"{name} is not in the protocol catalogue")

    def register(handler: Handler) -> Handler:
        HANDLERS[name] = handler
        if self_keyed:
            SELF_KEYED.add(name)
        return handler

    return register


def validation_error(exc: ValidationError) -> RpcError:
    problems = [
        {"field": ".".join(str(p) for p in err["loc"]) or "params", "problem": err["msg"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    return RpcError(ErrorCode.INVALID_PARAMS, f"invalid params: {summary}", {"errors": problems})


def invalid_field(field: str, problem: str) -> RpcError:
    """INVALID_PARAMS in the shape of a validation error."""
    return RpcError(
        ErrorCode.INVALID_PARAMS,
        f"invalid params: {field}: {problem}",
        {"errors": [{"field": field, "problem": problem}]},
    )


def parse_params(model: type[P], params: dict[str, Any]) -> P:
    found = unstorable(params)
    if found is not None:
        raise invalid_field(*found)
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise validation_error(exc) from None
    except (ValueError, TypeError, RecursionError) as exc:
        # A validator that failed in an unforeseen way is still the input's
        # fault, not the hub's.
        raise invalid_field("params", str(exc) or type(exc).__name__) from None


async def dispatch(call: Call, name: str, params: dict[str, Any]) -> Any:
    handler = HANDLERS.get(name)
    if handler is None:
        raise RpcError(ErrorCode.METHOD_NOT_FOUND, f"method not found: {name}")
    parsed = parse_params(CATALOGUE[name], params)
    if not call.actor.is_human or audit.is_read(name):
        return await _run(call, name, handler, parsed)
    # Every human action goes to the audit trail, with its outcome.
    try:
        result = await _run(call, name, handler, parsed)
    except RpcError as exc:
        await audit.record(
            call.hub, call.actor, name, outcome=audit.outcome_of(exc), detail=audit.summary(params)
        )
        raise
    await audit.record(call.hub, call.actor, name, detail=audit.summary(params))
    return result


async def _run(call: Call, name: str, handler: Handler, parsed: Any) -> Any:
    key = getattr(parsed, "idempotency_key", None)
    # A call that waits holds no transaction open for its wait, and a
    # self-keyed method's service claims its key itself: their handlers
    # hand the key to the service (hub.services.idempotency).
    if key is None or name in SELF_KEYED or getattr(parsed, "wait", None):
        return await handler(call, parsed)
    request = parsed.model_dump(mode="json", exclude={"idempotency_key"})
    return await idempotency.run(
        call.hub, call.actor, name, key, request, lambda: handler(call, parsed)
    )
