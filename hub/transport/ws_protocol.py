"""uvicorn's sans-I/O WebSocket protocol, with a shortcut for agent sessions.

An agent session exchanges many small frames. Through ASGI each one costs a
message dict, a queue hop and a task wake-up on the way in (and uvicorn
pauses and resumes reading around every frame), and the same again on the
way out. This protocol offers the session, through the ASGI scope's
``extensions`` (key :data:`EXTENSION`), two shortcuts:

- :meth:`DirectWebSocketProtocol.deliver_to`: from then on, each complete
  message goes to a callback straight from ``data_received``. Disconnects
  still arrive through ASGI ``receive()``.
- :meth:`DirectWebSocketProtocol.try_send`: writes a text frame at once if
  the transport takes it without waiting (not paused by flow control, the
  connection open); otherwise it returns False and the caller uses the ASGI
  ``send``, which waits.

Everything else (handshake, keepalive pings, close, size limits) is
uvicorn's. The app works the same without the extension, under any ASGI
server (:mod:`hub.transport.ws` checks for it). ``beadhub serve`` selects
this class with uvicorn's ``ws=`` option (:func:`hub.cli.uvicorn_config`).

The subclass reads some of uvicorn's attributes (``frames``,
``close_sent``, ``writable``, ``conn``, ``transport``), so pyproject.toml
bounds uvicorn's version and ``tests/test_ws_transport.py`` checks that
the shortcut is in use.
"""

from __future__ import annotations

from collections.abc import Callable

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

EXTENSION = "beadhub.websocket.direct"

OnMessage = Callable[[str | bytes], None]


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    on_message: OnMessage | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The app's task is created but has not run yet, so it sees this.
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION] = self

    def deliver_to(self, on_message: OnMessage | None) -> None:
        """Hand each later message to ``on_message`` instead of queueing it
        for ``receive()``. It runs inside ``data_received``: it must not
        block, and what it raises is logged and dropped."""
        self.on_message = on_message

    def send_receive_event_to_app(self) -> None:
        on_message = self.on_message
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        message: str | bytes = data
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                message = data.decode()
            except UnicodeDecodeError:
                # As uvicorn does (close with 1007, invalid data), but in
                # one line: a client's bad bytes are not the hub's bug.
                self.frames = []
                self.logger.warning("WebSocket text frame is not UTF-8; closing with 1007")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        if on_message is None or self.close_sent:
            super().send_receive_event_to_app()
            return
        self.frames = []
        try:
            on_message(message)
        except Exception:
            self.logger.exception("WebSocket message handler failed")

    def try_send(self, text: str) -> bool:
        """Write one text frame now if nothing would make it wait."""
        if (
            not self.writable.is_set()
            or self.close_sent
            or self.disconnected
            or self.conn.state is not State.OPEN
        ):
            return False
        self.conn.send_text(text.encode())
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True
