"""The dashboard in a real browser: Debian's headless Chromium driven by
Playwright's async API in the session's event loop, so the page, the hub
(uvicorn) and the agents (HubClient) all run together in one loop.

One browser for the whole run; each test gets its own context (fresh
storage) and its own project.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.support import RunningHub, free_port

CHROMIUM = os.environ.get("BEADHUB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHROMIUM_FOUND = Path(CHROMIUM).exists()
DESKTOP = {"width": 1366, "height": 860}
PHONE = {"width": 390, "height": 844}

# Bounded waits for things the page must show; never a sleep.
expect.set_options(timeout=5_000)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_FOUND:
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run scripts/test-deps.sh "
            "(apt-get install chromium) or set BEADHUB_CHROMIUM"
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()


class NewPage:
    """``await new_page()`` opens a page in a fresh context (own storage);
    ``viewport=PHONE`` and ``color_scheme="dark"`` change how it looks.
    Console errors and uncaught page errors fail the test, except those a
    test declares with ``new_page.allow("text")``."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []
        # A failed WebSocket handshake is logged while a hub is down; the
        # page is expected to retry through it.
        self.allowed: list[str] = ["WebSocket connection"]

    def allow(self, text: str) -> None:
        self.allowed.append(text)

    async def __call__(
        self, viewport: dict[str, int] | None = None, color_scheme: Any = "light", **kw: Any
    ) -> Page:
        context = await self.browser.new_context(
            viewport=viewport or DESKTOP, color_scheme=color_scheme, **kw
        )
        self.contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        return page

    async def close(self) -> list[str]:
        for context in self.contexts:
            await context.close()
        return [e for e in self.errors if not any(a in e for a in self.allowed)]


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[NewPage]:
    pages = NewPage(browser)
    yield pages
    unexpected = await pages.close()
    assert not unexpected, "\n".join(unexpected)


async def sign_in(page: Page, server_url: str, api_key: str) -> None:
    """Open an agent's own view of the dashboard the way a ``bdh
    :dashboard`` link does and wait until it is live."""
    await page.goto(f"{server_url}/#key={api_key}")
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """``BEADHUB_SCREENSHOTS=docs/screenshots`` refreshes the README's
    pictures; otherwise they go to a temporary directory."""
    out = Path(os.environ.get("BEADHUB_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


async def sign_in_human(
    page: Page, server: RunningHub, project_slug: str, human: str = "juan", url: str = ""
) -> None:
    """Open the dashboard as a human, with a one-time sign-in link made by
    the operator (what ``beadhub signin`` prints), and wait until it is live."""
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as client:
        response = await client.post(
            "/v1/auth/links",
            json={"human_name": human, "project_slug": project_slug},
            headers={"Authorization": f"Bearer {server.hub.operator_token}"},
        )
    response.raise_for_status()
    await page.goto(f"{url or server.http_url}/#signin={response.json()['token']}")
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")


def agent_card(page: Page, alias: str) -> Any:
    return page.locator(f'#team li.agent[data-alias="{alias}"]')


# -- a switchable TCP front door (a load balancer in miniature) ----------------


class FrontDoor:
    """Forwards one port to whichever hub is current. ``switch`` moves new
    connections to another hub and cuts the open ones, as a restart or a
    failover behind a load balancer does; ``closed`` refuses connections
    for a while, as a hub that is down does."""

    def __init__(self, target: RunningHub) -> None:
        self.target = target
        self.port = free_port()
        self.refusing = False
        self.connections: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FrontDoor:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        for writer in list(self.connections):
            writer.transport.abort()
        self.connections.clear()

    def switch(self, target: RunningHub) -> None:
        self.target = target
        self.cut()

    @contextlib.contextmanager
    def closed(self) -> Any:
        self.refusing = True
        self.cut()
        try:
            yield
        finally:
            self.refusing = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        settings = self.target.settings
        try:
            up_reader, up_writer = await asyncio.open_connection(settings.host, settings.port)
        except OSError:
            writer.transport.abort()
            return
        self.connections.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.connections.discard(writer)
        self.connections.discard(up_writer)


@pytest.fixture
async def front_door(hub_server: RunningHub) -> AsyncIterator[FrontDoor]:
    door = await FrontDoor(hub_server).start()
    yield door
    await door.stop()
