"""uvicorn's httptools protocol with a bound on the request head.

httptools buffers a header until it ends, however long it is: a client
could make the hub hold a 64 MiB header before anything sees it. This
protocol counts the bytes of a request head as they arrive and answers 431
(closing the connection) once they pass the bound, which is uvicorn's own
``h11_max_incomplete_event_size`` setting (the same bound the h11 protocol
applies; :func:`hub.cli.uvicorn_config` sets it from
``Settings.max_header_bytes``). The count is checked after each chunk the
parser takes, so at most one read (64 KiB) beyond the bound is held; a
head that arrived whole is measured when it ends, and answered 431 by a
tiny app in place of the hub's.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from protocol.errors import ErrorCode

DEFAULT_LIMIT = 16 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._head_limit: int = config.h11_max_incomplete_event_size or DEFAULT_LIMIT
        #: Bytes received since the current request head began.
        self._head_bytes = 0
        self._in_head = True
        self._completed = False
        #: Bytes of the current head's URL and headers, as parsed.
        self._head_size = 0

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            super().data_received(data)
            return
        pending = self._head_bytes + len(data)
        self._completed = False
        super().data_received(data)
        if self._in_head:
            # A chunk that also ended the previous request is not counted:
            # how much of it is the new head is unknown, and one chunk is
            # bounded anyway.
            self._head_bytes = 0 if self._completed else pending
            if self._head_bytes > self._head_limit and not self.transport.is_closing():
                self._refuse()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        size, self._head_size = self._head_size, 0
        if size <= self._head_limit:
            super().on_headers_complete()
            return
        app, self.app = self.app, self._too_large
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._completed = True

    def _body(self) -> bytes:
        return orjson.dumps(
            {
                "detail": f"request headers over {self._head_limit} bytes",
                "code": int(ErrorCode.TOO_LARGE),
            }
        )

    async def _too_large(self, scope: Any, receive: Any, send: Any) -> None:
        body = self._body()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 431, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _refuse(self) -> None:
        body = self._body()
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self.transport.close()
