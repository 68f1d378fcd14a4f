"""The ASGI middleware in front of every route, page and socket.

What it refuses, before any route runs:

- a ``Host`` the hub does not answer for (``Settings.hosts()``: loopback
  names by default), so a web page on another name that resolves to
  127.0.0.1 (DNS rebinding) cannot reach a local hub: 421;
- a ``POST``/``PUT``/``PATCH`` with a body that is not JSON by its
  ``Content-Type``: a browser sends a cross-site "simple request" as
  ``text/plain`` without asking first, never as ``application/json``: 415;
- a body over ``max_request_bytes``: by its ``Content-Length`` before a
  byte of it is read, or, when it comes chunked, as soon as the bytes read
  pass the bound (the route answers 413; nothing more is read).

And what it adds to every answer (pages, API answers, refused handshakes):
``Content-Security-Policy: frame-ancestors 'none'`` and ``X-Frame-Options:
DENY`` (no framing: clickjacking), ``X-Content-Type-Options: nosniff``,
``Referrer-Policy: no-referrer``, and ``Cache-Control: no-store`` on the
API's answers (they carry keys, tickets and project data; a route that
sets its own Cache-Control keeps it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from hub.config import Settings
from protocol.errors import ErrorCode, RpcError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
NO_STORE = (b"cache-control", b"no-store")
#: Paths whose answers are the dashboard's static files (cacheable).
_API_PREFIXES = ("/v1/", "/mcp", "/openapi.json", "/health", "/ready", "/metrics")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyTooLarge(RpcError):
    """Raised by ``receive`` once a chunked body passes the bound; routes
    answer it as any RpcError (413)."""


def host_name(value: str) -> str:
    """``Host`` without its port, lower case, IPv6 brackets dropped."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value


def is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class Guard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.hosts = settings.hosts()
        self.any_host = "*" in self.hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        send = self._adding_headers(scope, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            await _refuse(scope, receive, send, *refusal)
            return
        if kind == "http" and scope["method"] in _BODY_METHODS:
            receive = self._bounded(receive)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str, ErrorCode] | None:
        hosts = [bytes(v).decode("latin-1") for k, v in scope.get("headers") or () if k == b"host"]
        host = hosts[0] if len(hosts) == 1 else None
        if not self.any_host and (host is None or host_name(host) not in self.hosts):
            shown = hosts[0] if len(hosts) == 1 else hosts
            return 421, f"this hub does not answer for host {shown!r}", ErrorCode.FORBIDDEN
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            return None
        length_text = _header(scope, b"content-length")
        chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
        try:
            length = int(length_text) if length_text is not None else 0
        except ValueError:
            return 400, "Content-Length is not a number", ErrorCode.INVALID_REQUEST
        limit = self.settings.max_request_bytes
        if length > limit:
            return 413, f"body is {length} bytes; the limit is {limit}", ErrorCode.TOO_LARGE
        if (length > 0 or chunked) and not is_json(_header(scope, b"content-type") or ""):
            return 415, "send the body as Content-Type: application/json", ErrorCode.INVALID_REQUEST
        return None

    def _bounded(self, receive: Receive) -> Receive:
        limit = self.settings.max_request_bytes
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(ErrorCode.TOO_LARGE, f"body over {limit} bytes")
            return message

        return bounded_receive

    def _adding_headers(self, scope: Scope, send: Send) -> Send:
        api = scope["path"].startswith(_API_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = list(message.get("headers") or ())
                present = {bytes(name).lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if api and b"cache-control" not in present:
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        return send_with_headers


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, detail: str, code: ErrorCode
) -> None:
    body = orjson.dumps({"detail": detail, "code": int(code)})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if scope["type"] == "websocket":
        await receive()  # websocket.connect, which must come first
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send(
                {"type": "websocket.http.response.start", "status": status, "headers": headers}
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
