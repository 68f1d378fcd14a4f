"""A small asyncio client for the hub's agent protocol.

    async with HubClient("ws://127.0.0.1:8000", api_key) as hub:
        me = await hub.call("session.whoami")
        event = await hub.next_event("mail")

Behaviour:

- ``call`` sends a request and waits for its response; an error response
  raises :class:`~protocol.errors.RpcError` with the hub's code.
- Events land in an unbounded queue read by ``next_event``/``events()``.
  Each event is delivered once: the client remembers recent event ids and
  drops the duplicates a resume may replay.
- With ``reconnect=True`` (the default) a lost connection is re-opened with
  exponential backoff, resuming from the last cursor seen, so no event is
  missed. Calls in flight when the connection drops raise
  :class:`ConnectionLost`: their outcome is unknown, and the caller decides
  whether to retry.
- A resume from a cursor older than the hub's retention window gets a
  ``resync`` event instead of the pruned events: the client continues
  from the event's cursor (now) and calls ``on_resync(event)`` (a function
  or a coroutine function), where the application re-reads the state it
  keeps (inbox, status, reservations). The event is queued as well.
- ``retry_writes=True``: a state-changing call (one whose params take an
  ``idempotency_key``, :data:`RETRYABLE`) is sent with a fresh key, and
  if the connection drops before the answer it is sent again, with the
  same key, once the client has reconnected (on any instance): the hub
  answers the repeat with the first answer and changes nothing twice.
- ``events=["mail", "chat"]`` receives only those event types
  (:mod:`protocol.topics`), on the first connection and every reconnect;
  :meth:`HubClient.subscribe` changes it while connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol.errors import ErrorCode, RpcError
from protocol.methods import CATALOGUE
from protocol.schema import Retryable

Event = dict[str, Any]
#: The methods that change state and take an ``idempotency_key``.
RETRYABLE = frozenset(name for name, model in CATALOGUE.items() if issubclass(model, Retryable))


class ConnectionLost(ConnectionError):
    """The connection dropped before the hub answered."""


def _refusal(exc: InvalidStatus) -> RpcError:
    """The hub's JSON refusal of the handshake as an RpcError with its
    code; a proxy's own error page (502/503/504: no hub reachable) as
    UNAVAILABLE."""
    status = exc.response.status_code
    body: Any = {}
    with contextlib.suppress(orjson.JSONDecodeError):
        body = orjson.loads(exc.response.body or b"{}")
    if not isinstance(body, dict):
        body = {}
    code = body.get("code")
    if not isinstance(code, int):
        if status == 401:
            code = ErrorCode.UNAUTHORIZED
        elif status in (502, 503, 504):
            code = ErrorCode.UNAVAILABLE
        else:
            code = ErrorCode.INVALID_REQUEST
    return RpcError(code, body.get("detail") or f"HTTP {status}")


#: The hub's close code for a session whose credential was revoked.
CLOSE_REVOKED = 4001


class HubClient:
    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        ticket: str | None = None,
        cursor: int | None = None,
        events: list[str] | None = None,
        reconnect: bool = True,
        max_backoff: float = 2.0,
        open_timeout: float = 10.0,
        remember_ids: int = 20_000,
        on_resync: Callable[[Event], Any] | None = None,
        retry_writes: bool = False,
        retry_timeout: float = 30.0,
    ) -> None:
        base = url.rstrip("/")
        if base.startswith("http"):
            base = "ws" + base[4:]
        self.url = base if base.endswith("/v1/ws") else base + "/v1/ws"
        self.api_key = api_key
        self.ticket = ticket
        self.retry_writes = retry_writes
        self.retry_timeout = retry_timeout
        self.cursor = cursor
        #: The event types to receive (protocol.topics); None: all.
        self.subscription = events
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self.open_timeout = open_timeout
        self.connections = 0
        self.on_resync = on_resync
        #: How many times the hub said this client's cursor was too old.
        self.resyncs = 0
        self._resync_tasks: set[asyncio.Task[Any]] = set()
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_ids
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closed = False
        #: Set when the hub closed the session because its credential was
        #: revoked (close code 4001) or refuses it on reconnect (401).
        self.revoked = False

    # -- connection -----------------------------------------------------------

    def _connect_url(self) -> str:
        params = []
        if self.cursor is not None:
            params.append(f"cursor={self.cursor}")
        if self.subscription is not None:
            params.append("events=" + ",".join(self.subscription))
        return self.url + ("?" + "&".join(params) if params else "")

    async def _open(self) -> None:
        # A ticket goes in a header like a key: never in the URL.
        credential = self.api_key or self.ticket
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        self._ws = await connect(
            self._connect_url(),
            additional_headers=headers,
            open_timeout=self.open_timeout,
            max_size=None,
            compression=None,
        )
        self.connections += 1
        self._connected.set()

    async def connect(self) -> HubClient:
        try:
            await self._open()
        except InvalidStatus as exc:
            raise _refusal(exc) from None
        self._reader = asyncio.create_task(self._read_loop())
        return self

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        self._fail_pending()

    async def ended(self) -> None:
        """Until the session is over for good: the hub revoked its
        credential, or it was closed without reconnecting."""
        if self._reader is not None:
            await asyncio.shield(self._reader)

    async def __aenter__(self) -> HubClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost("connection to the hub was lost"))
        self._pending.clear()

    async def _read_loop(self) -> None:
        backoff = 0.05
        while True:
            assert self._ws is not None
            try:
                async for frame in self._ws:
                    self._on_frame(frame)
            except ConnectionClosed:
                pass
            self._connected.clear()
            self._fail_pending()
            if self._ws.close_code == CLOSE_REVOKED:
                # The credential was revoked: reconnecting cannot succeed.
                self.revoked = True
                return
            if self._closed or not self.reconnect:
                return
            while True:
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.max_backoff)
                try:
                    await self._open()
                    backoff = 0.05
                    break
                except InvalidStatus as exc:
                    if exc.response.status_code == 401:
                        self.revoked = True
                        return
                    continue
                except (TimeoutError, OSError, ConnectionClosed):
                    continue

    def _on_frame(self, frame: str | bytes) -> None:
        message = orjson.loads(frame)
        if "id" in message and ("result" in message or "error" in message):
            future = self._pending.pop(message["id"], None)
            if future is None or future.done():
                return
            if "error" in message:
                error = message["error"]
                future.set_exception(RpcError(error["code"], error["message"], error.get("data")))
            else:
                future.set_result(message["result"])
        elif message.get("method") == "event":
            self._on_event(message["params"])

    def _on_event(self, event: Event) -> None:
        event_id = event.get("id")
        if event_id is not None:
            if event_id in self._seen:
                return
            self._seen[event_id] = None
            if len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        cursor = event.get("cursor")
        if cursor is not None:
            value = int(cursor)
            if self.cursor is None or value > self.cursor:
                self.cursor = value
        if event.get("type") == "resync":
            self._on_resync(event)
        self._events.put_nowait(event)

    def _on_resync(self, event: Event) -> None:
        """The hub pruned events after our cursor: continue from its cursor
        and let the application re-read its state."""
        self.resyncs += 1
        if self.on_resync is None:
            return
        result = self.on_resync(event)
        if asyncio.iscoroutine(result):
            task = asyncio.ensure_future(result)
            self._resync_tasks.add(task)
            task.add_done_callback(self._resync_tasks.discard)

    # -- calls and events -----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def subscribe(self, events: list[str] | None) -> list[str] | None:
        """Receive only these event types from now on (None: all); kept
        for reconnects."""
        result = await self.call("session.subscribe", events=events)
        self.subscription = result["events"]
        return self.subscription

    async def call(self, method: str, params: dict[str, Any] | None = None, /, **kw: Any) -> Any:
        merged = {**(params or {}), **kw}
        if not (self.retry_writes and self.reconnect and method in RETRYABLE):
            return await self._call(method, merged)
        merged.setdefault("idempotency_key", uuid.uuid4().hex)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_timeout
        while True:
            try:
                return await self._call(method, merged)
            except ConnectionLost:
                if self._closed or loop.time() >= deadline:
                    raise
            # Sent again, same key, once a connection is back (TimeoutError
            # if none comes within retry_timeout).
            await self.wait_connected(timeout=max(0.1, deadline - loop.time()))

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        if self._ws is None:
            raise RuntimeError("HubClient.connect() was not awaited")
        if not self._connected.is_set():
            raise ConnectionLost("not connected to the hub")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        try:
            await self._ws.send(orjson.dumps(payload).decode())
        except ConnectionClosed:
            self._pending.pop(request_id, None)
            raise ConnectionLost("connection to the hub was lost") from None
        return await future

    async def send_raw(self, frame: str | bytes) -> None:
        assert self._ws is not None
        await self._ws.send(frame)

    async def next_event(
        self,
        type: str | None = None,
        *,
        timeout: float = 10.0,
        where: Callable[[Event], bool] | None = None,
    ) -> Event:
        """The next event of ``type`` matching ``where``; others are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self._events.get()
                if (type is None or event["type"] == type) and (where is None or where(event)):
                    return event

    def pending_events(self) -> list[Event]:
        found = []
        while not self._events.empty():
            found.append(self._events.get_nowait())
        return found

    async def events(self) -> AsyncIterator[Event]:
        while True:
            yield await self._events.get()
