"""Agent sessions: JSON-RPC 2.0 over a WebSocket at ``GET /v1/ws``.

Behaviour and limits:

- Auth happens in the handshake (``Authorization: Bearer <api_key or
  ticket>``; browsers, which cannot set headers, offer the subprotocols
  ``beadhub`` and ``beadhub.ticket.<ticket>``). Never in the URL, which
  proxies and access logs keep. A bad credential gets HTTP 401 with a JSON
  body and no socket. When the credential is revoked (a key revoked or
  rotated, the agent or project deleted, the ticket signed out or
  expired) the socket is closed with 4001 on whichever instance holds it.
- Requests run concurrently (a ``chat.send`` that waits does not hold up
  the session), at most ``MAX_IN_FLIGHT`` at once; more get RATE_LIMITED.
  So do calls past the key's allowance on this instance
  (``rate_calls_burst``, ``rate_calls_per_second``: limits.spend_call);
  a refused call does nothing and the session stays open.
  Responses may therefore arrive out of order: match them by ``id``.
- A request frame larger than ``max_request_bytes`` gets TOO_LARGE and the
  socket stays open; a frame larger than ``ws_max_frame_bytes`` is refused
  by the WebSocket layer (close code 1009).
- Events are pushed as ``{"method": "event", "params": {...}}``. Connect with
  ``?cursor=N`` to first receive the events after N from the store, then the
  live stream, with nothing lost in between (duplicates share an ``id``).
  ``?events=mail,chat`` (or ``session.subscribe``) limits them to those
  types (:mod:`protocol.topics`); replays and catch-ups honour it too.
- Liveness: the server pings; a socket that stops answering is closed and
  the agent goes offline when its last session ends.
- A client that reads too slowly (``ws_max_queued_bytes`` of frames, or
  ``MAX_QUEUED`` frames, waiting for it) is disconnected with 1013 rather
  than buffered without bound; it resumes from its cursor. A replay waits
  for the reader instead, so a resume always makes progress.
- An agent holds at most ``max_sessions_per_agent`` sessions, and a key
  opens at most ``rate_sessions_per_minute``: more are refused (429).
- When the bus may have lost messages (the hub's Redis connection dropped
  and came back, or another instance died between a commit and its
  publish), each session re-reads the store from before the gap and sends
  what it finds, so a client that stayed connected misses nothing either
  (repeats keep their ids). If the store cannot be read then, the session
  is closed with 1013 and the client resumes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from hub import logs, metrics
from hub.services import auth, delivery, events, limits, presence, revocation
from hub.services.context import Actor, Hub
from hub.store import database_unavailable
from hub.transport.rpc import HANDLERS, Call, dispatch
from hub.transport.ws_protocol import EXTENSION, DirectWebSocketProtocol
from protocol import jsonrpc, topics
from protocol.errors import ErrorCode, RpcError

logger = logging.getLogger("beadhub.ws")
#: One line per call at DEBUG (``BEADHUB_LOG_LEVEL=debug``).
call_logger = logging.getLogger("beadhub.ws.calls")

MAX_IN_FLIGHT = 64
MAX_QUEUED = 10_000
#: Close code for a session that fell behind: reconnect with ``?cursor=``.
CLOSE_RESUME = 1013
#: Close code for a session whose credential was revoked: do not reconnect.
CLOSE_REVOKED = 4001
#: How long a revoked session lets its calls in flight finish (a key
#: rotation's answer reaches the caller) before it closes.
REVOKE_GRACE_SECONDS = 1.0
SUBPROTOCOL = "beadhub"
TICKET_SUBPROTOCOL = "beadhub.ticket."
_FRAME_KEY = "\x00frame"

_DELIVERED = metrics.EVENTS_DELIVERED
_SESSIONS_OPENED = metrics.SESSIONS_OPENED
#: method name -> its latency histogram child, bound on first use (only
#: names of registered methods, so a client cannot grow the label set).
_METHOD_TIMERS: dict[str, metrics.HistogramChild] = {}


def _timer(method: str) -> metrics.HistogramChild:
    timer = _METHOD_TIMERS.get(method)
    if timer is None:
        name = method if method in HANDLERS else "unknown"
        timer = metrics.METHOD_SECONDS.child(name, "ws")
        if name != "unknown":
            _METHOD_TIMERS[method] = timer
    return timer


def _request_id(raw: str | bytes) -> Any:
    """The id of a request we refuse without handling, so the client can
    still match the error to its call."""
    with contextlib.suppress(Exception):
        request_id = jsonrpc.decode(raw).get("id")
        if isinstance(request_id, (int, str)):
            return request_id
    return None


def _event_frame(message: dict[str, Any]) -> str:
    """Encode an event once, however many sessions it goes to."""
    frame = message.get(_FRAME_KEY)
    if frame is None:
        wire = {k: v for k, v in message.items() if k != "recipients"}
        frame = message[_FRAME_KEY] = jsonrpc.event(wire).decode()
    return frame


class AgentSession:
    def __init__(
        self, hub: Hub, actor: Actor, websocket: WebSocket, expires_at: float | None = None
    ) -> None:
        self.id = uuid.uuid4().hex
        self.hub = hub
        self.actor = actor
        #: Whose call allowance this session's requests spend.
        self._caller = limits.caller_key(actor)
        self.websocket = websocket
        self.expires_at = expires_at
        self._revoked = False
        self._revoke_task: asyncio.Task[None] | None = None
        self._unwatch: Any = None
        #: Frames, None (close to resume: 1013) or a close code.
        self._queue: asyncio.Queue[str | int | None] = asyncio.Queue()
        #: Frames handed to the writer task and not written yet: while
        #: there are any, a new frame queues behind them.
        self._unsent = 0
        #: Their bytes (ws_max_queued_bytes bounds them).
        self._unsent_bytes = 0
        self._max_bytes = hub.settings.ws_max_queued_bytes
        #: Set when the queue has room again (a replay waits on it).
        self._room = asyncio.Event()
        #: The server's shortcut past ASGI for frames, when it offers one
        #: (hub.transport.ws_protocol).
        extensions = websocket.scope.get("extensions") or {}
        self._direct: DirectWebSocketProtocol | None = extensions.get(EXTENSION)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._replay_buffer: list[dict[str, Any]] | None = None
        self._closing = False
        #: The highest event cursor sent (or asked for): where a catch-up
        #: after a bus gap reads from. None while nothing was sent.
        self._cursor: int | None = None
        #: When the session started listening (monotonic).
        self._started = time.monotonic()
        self._gap = False
        #: Start (monotonic) of the oldest gap not caught up yet.
        self._gap_since: float | None = None
        self._catch_up_task: asyncio.Task[None] | None = None
        self._topics: list[str] | None = None
        self._wants: topics.Matcher | None = None
        #: The cursor the client asked to resume from, until it is checked
        #: against retention (events after it may have been pruned).
        self._resume_from: int | None = None

    def subscribe(self, subscription: list[str] | None) -> list[str] | None:
        """Receive only these event types from now on (None: all)."""
        self._topics = subscription
        self._wants = topics.matcher(subscription)
        # The relay filters live events (see hub.bus.relay); the replay here.
        self.hub.relay.refilter(self._channel, self.on_event, self._wants)
        return subscription

    # -- outgoing ---------------------------------------------------------

    def send(self, frame: str) -> None:
        if self._closing:
            return
        direct = self._direct
        if direct is not None and not self._unsent and direct.try_send(frame):
            return
        if self._unsent >= MAX_QUEUED or self._unsent_bytes + len(frame) > self._max_bytes:
            logger.warning(
                "session %s is %d frames (%d bytes) behind; closing it to resume",
                self.id,
                self._unsent,
                self._unsent_bytes,
                extra=self._log_context("session"),
            )
            metrics.SESSIONS_DROPPED.inc()
            self.close_to_resume()
            return
        self._unsent += 1
        self._unsent_bytes += len(frame)
        self._queue.put_nowait(frame)

    def on_event(self, message: dict[str, Any]) -> None:
        recipients = message.get("recipients")
        agent_id = self.actor.agent_id
        if recipients is not None and agent_id is not None and agent_id not in recipients:
            return
        if self._replay_buffer is not None:
            self._replay_buffer.append(message)
            return
        self._send_event(message)

    @property
    def queued(self) -> int:
        """Frames waiting for the writer."""
        return self._unsent

    def _log_context(self, method: str) -> dict[str, Any]:
        """``extra=`` for a line written outside this session's tasks."""
        return {
            "project": self.actor.project_slug,
            "agent": self.actor.alias,
            "method": method,
            "latency_ms": round((time.monotonic() - self._started) * 1000, 3),
        }

    def _send_event(self, message: dict[str, Any]) -> None:
        _DELIVERED.value += 1
        self.send(_event_frame(message))
        if message["type"] == "mail" and self.actor.agent_id is not None:
            delivery.pushed(self.hub, self.actor.agent_id, message["data"]["message_id"])
        cursor = int(message["cursor"])
        if self._cursor is None or cursor > self._cursor:
            self._cursor = cursor

    async def _writer(self) -> None:
        while True:
            frame = await self._queue.get()
            if frame is None:
                await self.websocket.close(code=CLOSE_RESUME)
                return
            if isinstance(frame, int):
                await self.websocket.close(code=frame, reason="credential revoked")
                return
            await self.websocket.send_text(frame)
            self._unsent -= 1
            self._unsent_bytes -= len(frame)
            if self._unsent_bytes <= self._max_bytes // 2:
                self._room.set()

    async def _wait_for_room(self) -> None:
        """Hold a replay while half the queue's bound waits for the reader."""
        while self._unsent_bytes > self._max_bytes // 2 and not self._closing:
            self._room.clear()
            await self._room.wait()

    # -- resume -------------------------------------------------------------

    async def replay(self, cursor: int) -> None:
        """Send what the store has after ``cursor``, then what arrived live
        meanwhile, each event once."""
        sent: set[str] = set()
        while True:
            batch = await events.since(self.hub, self.actor.project_id, self.actor.agent_id, cursor)
            for event in batch:
                if self._wants is not None and not self._wants(event.type):
                    continue
                if event.id not in sent:
                    sent.add(event.id)
                    self._send_event(event.bus_message())
                    await self._wait_for_room()
            if len(batch) < events.REPLAY_LIMIT:
                break
            cursor = batch[-1].seq
        buffered, self._replay_buffer = self._replay_buffer or [], None
        for message in buffered:
            if message["id"] not in sent:
                self._send_event(message)

    def on_gap(self, seconds: float) -> None:
        """Relay callback: the bus may have lost this project's events of
        the last ``seconds``."""
        since = time.monotonic() - seconds
        if self._cursor is None:
            # Nothing sent yet: what the client is owed starts when the
            # session started listening, not before.
            since = max(since, self._started - 1.0)
        if self._gap_since is None or since < self._gap_since:
            self._gap_since = since
        self._gap = True
        self._start_catch_up()

    def _start_catch_up(self) -> None:
        if not self._gap or self._closing:
            return
        if self._catch_up_task is None or self._catch_up_task.done():
            self._catch_up_task = asyncio.create_task(self._catch_up())

    async def _catch_up(self) -> None:
        """Replay from the last cursor sent, again if another gap came
        meanwhile. Live events are buffered during each pass."""
        try:
            while self._gap and not self._closing:
                self._gap = False
                cursor = self._cursor
                if self._replay_buffer is None:
                    self._replay_buffer = []
                if self._gap_since is not None or cursor is None:
                    # A lost event may be older than what was sent since
                    # (its instance died before publishing it): re-read
                    # from before the gap began.
                    gap_since = self._gap_since
                    if gap_since is None:
                        gap_since = self._started - 1.0
                    self._gap_since = None
                    seconds = time.monotonic() - gap_since
                    before = await events.cursor_before(self.hub, self.actor.project_id, seconds)
                    cursor = before if cursor is None else min(cursor, before)
                if self._resume_from is not None:
                    cursor = await self._resume_or_resync(self._resume_from, cursor)
                await self.replay(cursor)
        except Exception as exc:
            if not database_unavailable(exc) and not isinstance(exc, RpcError):
                logger.exception("session %s could not catch up", self.id)
            self._replay_buffer = None
            self.close_to_resume()

    async def _resume_or_resync(self, requested: int, cursor: int) -> int:
        """Where to replay from: ``cursor``, unless retention pruned events
        after the client's cursor; then the client gets a ``resync`` event
        and everything from the project's latest cursor on."""
        self._resume_from = None
        resync = await events.resync_needed(self.hub, self.actor.project_id, requested)
        if resync is None:
            return cursor
        logger.info("resume from cursor %d is past retention; told to resync", requested)
        latest = int(resync["cursor"])
        self.send(jsonrpc.event(events.resync_event(self.actor.project_id, resync)).decode())
        self._cursor = latest
        return latest

    def close_to_resume(self) -> None:
        """Close with 1013 (try again later): the client reconnects and
        resumes from its own cursor."""
        if not self._closing:
            self._closing = True
            self._room.set()
            self._queue.put_nowait(None)

    def revoke(self, reason: str) -> None:
        """Revocation callback: refuse new calls now, let those in flight
        answer, then close with 4001."""
        if self._revoked or self._closing:
            return
        self._revoked = True
        logger.info("session %s: credential %s (%s); closing", self.id, reason, self.actor.alias)
        self._revoke_task = asyncio.get_running_loop().create_task(self._close_revoked())

    async def _close_revoked(self) -> None:
        current = asyncio.current_task()
        pending = [t for t in self._in_flight if t is not current]
        if pending:
            await asyncio.wait(pending, timeout=REVOKE_GRACE_SECONDS)
        if not self._closing:
            self._closing = True
            self._queue.put_nowait(CLOSE_REVOKED)

    # -- incoming -------------------------------------------------------------

    async def handle(self, raw: str | bytes) -> None:
        request_id: Any = None
        started = time.perf_counter()
        method = "unknown"
        code = 0
        try:
            if len(raw) > self.hub.settings.max_request_bytes:
                request_id = _request_id(raw)
                raise RpcError(
                    ErrorCode.TOO_LARGE,
                    f"request is {len(raw)} bytes; the limit is "
                    f"{self.hub.settings.max_request_bytes}",
                )
            request = jsonrpc.parse_request(raw)
            request_id = request.id
            method = request.method
            # This request's task: its log lines name the call.
            logs.CALL.set(
                logs.CallContext(self.actor.project_slug, self.actor.alias, method, started)
            )
            call = Call(self.hub, self.actor, self)
            result = await dispatch(call, request.method, request.params)
            if request_id is not None:
                self.send(jsonrpc.result(request_id, result).decode())
        except RpcError as exc:
            request_id = getattr(exc, "request_id", request_id)
            code = int(exc.code)
            self.send(jsonrpc.error(request_id, exc).decode())
        except Exception as exc:
            if database_unavailable(exc):
                error = RpcError(ErrorCode.UNAVAILABLE, "the hub's database is unavailable")
            else:
                logger.exception("internal error")
                error = RpcError(ErrorCode.INTERNAL_ERROR, "internal error")
            code = int(error.code)
            self.send(jsonrpc.error(request_id, error).decode())
        elapsed = time.perf_counter() - started
        _timer(method).observe(elapsed)
        if code:
            _count_error(method, code)
        if call_logger.isEnabledFor(logging.DEBUG):
            call_logger.debug("call %s %s", method, "ok" if not code else f"error {code}")

    def start_request(self, raw: str | bytes) -> None:
        if self._closing:
            return
        if self._revoked:
            refused = RpcError(ErrorCode.UNAUTHORIZED, "this session's credential was revoked")
            self.send(jsonrpc.error(_request_id(raw), refused).decode())
            return
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            metrics.rate_limited("in_flight")
            error = RpcError(
                ErrorCode.RATE_LIMITED,
                f"more than {MAX_IN_FLIGHT} requests in flight",
                {"retry_after": 1},
            )
            self.send(jsonrpc.error(_request_id(raw), error).decode())
            return
        try:
            limits.spend_call(self.hub, self._caller)
        except RpcError as refused:
            self.send(jsonrpc.error(_request_id(raw), refused).decode())
            return
        task = asyncio.create_task(self.handle(raw))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def open(self, cursor: int | None) -> None:
        """Subscribe and count the session as online, before the handshake
        completes: once a client's connect returns, its agent is listed as
        online and no event published after that point can be missed."""
        self._started = time.monotonic()
        _SESSIONS_OPENED.value += 1
        self.hub.sessions.add(self)
        if cursor is not None:
            # The replay the client asked for; a bus gap that comes before
            # it starts joins the same pass.
            self._cursor = cursor
            self._resume_from = cursor
            self._replay_buffer = []
            self._gap = True
        await self.hub.relay.add(
            self._channel,
            self.on_event,
            on_gap=self.on_gap,
            wants=self._wants,
            agent=self.actor.agent_id,
        )
        self._unwatch = revocation.watch(self.hub, self.actor, self.revoke, self.expires_at)
        if self._counts_presence:
            try:
                await presence.session_opened(self.hub, self.actor, self.id)
            except BaseException:
                self._unwatch()
                self.hub.sessions.discard(self)
                await self.hub.relay.remove(self._channel, self.on_event)
                raise

    @property
    def _counts_presence(self) -> bool:
        """An agent's own sessions make it online; its dashboard view (a
        ticket) does not."""
        return self.actor.agent_id is not None and not self.actor.via_ticket

    @property
    def _channel(self) -> str:
        return events.channel(self.actor.project_id)

    async def run(self) -> None:
        """Serve the accepted socket until it closes; then leave."""
        writer = asyncio.create_task(self._writer())
        try:
            self._start_catch_up()
            if self._catch_up_task is not None:
                # Replay before serving requests, as the client expects.
                await self._catch_up_task
            if self._direct is not None:
                # Later requests skip ASGI; receive() still reports the end.
                self._direct.deliver_to(self.start_request)
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                if raw is None:
                    raw = message.get("bytes") or b""
                self.start_request(raw)
        except WebSocketDisconnect:
            pass
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            await self.close()

    async def close(self) -> None:
        self._closing = True
        self.hub.sessions.discard(self)
        if self._unwatch is not None:
            self._unwatch()
        if self._direct is not None:
            self._direct.deliver_to(None)
        await self.hub.relay.remove(self._channel, self.on_event)
        if self._catch_up_task is not None:
            self._catch_up_task.cancel()
        for task in list(self._in_flight):
            task.cancel()
        if self._counts_presence:
            try:
                await presence.session_closed(self.hub, self.actor, self.id)
            except Exception:
                logger.exception("could not record the end of session %s", self.id)


def _count_error(method: str, code: int) -> None:
    name = method if method in HANDLERS else "unknown"
    metrics.METHOD_ERRORS.labels(method=name, transport="ws", code=str(code)).inc()


def offered_ticket(websocket: WebSocket) -> str | None:
    for offered in websocket.scope.get("subprotocols") or ():
        if offered.startswith(TICKET_SUBPROTOCOL):
            return str(offered[len(TICKET_SUBPROTOCOL) :])
    return None


async def authenticate_socket(
    hub: Hub, websocket: WebSocket
) -> tuple[Actor, float | None, str | None]:
    """The caller, when its ticket expires, and the subprotocol to accept."""
    if "ticket" in websocket.query_params:
        raise RpcError(
            ErrorCode.UNAUTHORIZED,
            "a ticket never goes in the URL: send it as Authorization: Bearer, or offer the "
            f"subprotocols {SUBPROTOCOL!r} and '{TICKET_SUBPROTOCOL}<ticket>'",
        )
    ticket = offered_ticket(websocket)
    token = ticket or auth.bearer_token(websocket.headers.get("authorization"))
    actor, expires = await auth.resolve(hub, token)
    if expires is not None and expires.timestamp() <= time.time():
        raise RpcError(ErrorCode.UNAUTHORIZED, "invalid or expired ticket: sign in again")
    return actor, expires.timestamp() if expires else None, SUBPROTOCOL if ticket else None


async def admit(hub: Hub, websocket: WebSocket) -> tuple[Actor, float | None, str | None]:
    """The caller (with its ticket's expiry and the subprotocol to accept),
    counted against the limits on refused credentials (per address) and on
    sessions opened (per key)."""
    address = websocket.client.host if websocket.client is not None else "unknown"
    found: list[tuple[float | None, str | None]] = []

    async def attempt() -> Actor:
        actor, expires_at, subprotocol = await authenticate_socket(hub, websocket)
        found.append((expires_at, subprotocol))
        return actor

    actor = await limits.authenticated(hub, address, attempt)
    await limits.check(hub, "session_open", limits.caller_key(actor), "too many sessions opened")
    return actor, *found[0]


def _denial(exc: RpcError) -> JSONResponse:
    body: dict[str, Any] = {"detail": exc.message, "code": int(exc.code)}
    headers = None
    if exc.code == ErrorCode.RATE_LIMITED and isinstance(exc.data, dict):
        body["data"] = exc.data
        headers = {"Retry-After": str(exc.data.get("retry_after", 1))}
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


def _connect_options(websocket: WebSocket) -> tuple[int | None, list[str] | None]:
    """``?cursor=`` (None: live only) and ``?events=`` (None: every type)."""
    cursor_text = websocket.query_params.get("cursor")
    try:
        cursor = int(cursor_text) if cursor_text else None
    except ValueError:
        cursor = -1
    if cursor is not None and cursor < 0:
        raise ValueError("cursor must be a non-negative integer")
    events_text = websocket.query_params.get("events")
    return cursor, None if events_text is None else topics.parse_query(events_text)


async def agent_socket(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    try:
        actor, expires_at, subprotocol = await admit(hub, websocket)
        cursor, subscription = _connect_options(websocket)
    except RpcError as exc:
        await websocket.send_denial_response(_denial(exc))
        return
    except ValueError as exc:
        body = {"detail": str(exc), "code": int(ErrorCode.INVALID_PARAMS)}
        await websocket.send_denial_response(JSONResponse(body, status_code=400))
        return
    # The session's task: its lines (uvicorn's "[accepted]" too) name it.
    logs.set_call(actor.project_slug, actor.alias, "session")
    session = AgentSession(hub, actor, websocket, expires_at)
    session.subscribe(subscription)
    try:
        await session.open(cursor)
    except RpcError as exc:
        await websocket.send_denial_response(_denial(exc))
        return
    except Exception as exc:
        error = RpcError(ErrorCode.UNAVAILABLE, "the hub cannot open a session now, retry")
        if not database_unavailable(exc) and not isinstance(exc, RpcError):
            logger.exception("could not open a session")
        body = {"detail": error.message, "code": int(error.code)}
        await websocket.send_denial_response(JSONResponse(body, status_code=503))
        return
    try:
        await websocket.accept(subprotocol=subprotocol)
    except BaseException:
        await session.close()
        raise
    await session.run()
