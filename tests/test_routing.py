"""The exact-path router answers every request as Starlette's router would."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.routing import Router as StarletteRouter

from hub.transport.routing import Router, exact_paths


def _answer(name: str):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{name} {request.method}")

    return endpoint


ROUTES = [
    Route("/items/{item_id}", _answer("item"), methods=["GET"]),
    Route("/items/new", _answer("new"), methods=["GET", "POST"]),
    Route("/status", _answer("status"), methods=["GET"]),
    Route("/status", _answer("status-post"), methods=["POST"]),
    Route("/{anything}/deep", _answer("deep"), methods=["GET"]),
]


def test_a_path_an_earlier_pattern_could_take_is_left_to_the_scan():
    table = exact_paths(ROUTES)
    assert "/items/new" not in table
    assert table == {"/status": [ROUTES[2], ROUTES[3]]}


async def _responses(router: StarletteRouter) -> list[tuple[int, str]]:
    app = Starlette()
    app.router = router
    transport = httpx.ASGITransport(app=app)
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for method, path in [
            ("GET", "/status"),
            ("POST", "/status"),
            ("PUT", "/status"),
            ("GET", "/items/new"),
            ("POST", "/items/new"),
            ("GET", "/items/7"),
            ("GET", "/status/deep"),
            ("GET", "/nowhere"),
        ]:
            response = await client.request(method, path)
            out.append((response.status_code, response.text))
    return out


async def test_every_request_gets_what_starlettes_router_gives():
    ours = await _responses(Router(ROUTES))
    assert ours == await _responses(StarletteRouter(ROUTES))
    # The shortcut answered the exact paths; the scan the rest.
    assert ours[:3] == [(200, "status GET"), (200, "status-post POST"), (405, "Method Not Allowed")]
    assert ours[3:6] == [(200, "item GET"), (200, "new POST"), (200, "item GET")]
