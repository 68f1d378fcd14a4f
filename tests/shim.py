"""Helpers for the HTTP shim tests: an httpx client holding one agent's
key, and a strict check of an answer against the contract's models."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import BaseModel

from tests.support import onboard


class Shim:
    """One agent talking to the hub the way bdh does: plain HTTP, Bearer key."""

    def __init__(self, base_url: str, agent: dict[str, Any] | None = None) -> None:
        self.agent = agent or {}
        headers = {"Authorization": f"Bearer {agent['api_key']}"} if agent else {}
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10)

    @property
    def id(self) -> str:
        return str(self.agent["agent_id"])

    @property
    def alias(self) -> str:
        return str(self.agent["alias"])

    async def close(self) -> None:
        await self.http.aclose()

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(path, params=params)

    async def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return await self.http.post(path, json=body, **kw)

    async def delete(self, path: str) -> httpx.Response:
        return await self.http.delete(path)


def ok(response: httpx.Response, model: type[BaseModel], status: int = 200) -> dict[str, Any]:
    """The answer's status, and its body read with the contract's field
    names and strict types (as Go's decoder reads them)."""
    assert response.status_code == status, (response.status_code, response.text)
    data = response.json()
    model.model_validate(data, strict=True)
    return data  # type: ignore[no-any-return]


def error(response: httpx.Response, status: int) -> str:
    """A JSON error body with a readable detail."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    return detail


def bdh_init_body(slug: str, alias: str, **extra: Any) -> dict[str, Any]:
    """bdh's InitRequest, every field it sends."""
    return {
        "repo_origin": "git@github.com:acme/widgets.git",
        "alias": alias,
        "human_name": "Juan",
        "role": "",
        "project_slug": slug,
        "email": "",
        "hostname": "laptop",
        "workspace_path": f"/src/widgets-{alias}",
        **extra,
    }


async def bdh_agent(base_url: str, slug: str, alias: str, **extra: Any) -> Shim:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.post("/v1/init", json=bdh_init_body(slug, alias, **extra))
    assert response.status_code == 200, response.text
    return Shim(base_url, response.json())


async def aw_agent(base_url: str, slug: str, alias: str, **extra: Any) -> Shim:
    return Shim(base_url, await onboard(base_url, slug, alias, **extra))


class SseStream:
    """bdh's send-and-wait stream, read the way bdh reads it: ``event:``
    and ``data:`` lines, a blank line ending each event, comments
    skipped."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next event as ``{"event": name, **data}``; raises
        StopAsyncIteration when the hub ends the stream."""
        async with asyncio.timeout(timeout):
            name, data = "message", []
            async for line in self._lines:
                if line == "":
                    if data:
                        return {"event": name, **json.loads("\n".join(data))}
                    continue
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
            raise StopAsyncIteration


@contextlib.asynccontextmanager
async def sse(shim: Shim, session_id: str, deadline: datetime) -> AsyncIterator[SseStream]:
    params = {"deadline": deadline.isoformat().replace("+00:00", "Z")}
    async with shim.http.stream(
        "GET",
        f"/v1/chat/sessions/{session_id}/stream",
        params=params,
        headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"},
        timeout=httpx.Timeout(10, read=None),
    ) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseStream(response)


def in_seconds(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
