"""A WebSocket client whose reading the test controls: websockets'
sans-I/O protocol over a plain asyncio stream. It can stop reading (a slow
reader), and send frames no well-behaved client sends (invalid UTF-8 in a
text frame)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri


class RawSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proto: Any):
        self.reader = reader
        self.writer = writer
        self.proto = proto

    @classmethod
    async def connect(
        cls, url: str, headers: dict[str, str], *, receive_buffer: int | None = None
    ) -> RawSocket:
        """Open and hand-shake; ``receive_buffer`` shrinks the kernel's
        receive buffer, so a reader that stops reading is felt at once."""
        uri = parse_uri(url)
        sock = socket.socket()
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (uri.host, uri.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
        proto = ClientProtocol(uri, max_size=None)
        request = proto.connect()
        for name, value in headers.items():
            request.headers[name] = value
        proto.send_request(request)
        raw = cls(reader, writer, proto)
        await raw.flush()
        while True:
            events = await raw.read_events()
            if any(isinstance(e, Response) for e in events):
                response = next(e for e in events if isinstance(e, Response))
                if response.status_code != 101:
                    raise ConnectionError(f"handshake refused: {response.status_code}")
                return raw

    async def flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                self.writer.write(data)
        await self.writer.drain()

    async def read_events(self, size: int = 65536) -> list[Any]:
        data = await self.reader.read(size)
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()
        return list(self.proto.events_received())

    async def send_frame(self, opcode: Opcode, payload: bytes) -> None:
        """A frame as given, valid or not (bypasses the protocol's checks)."""
        self.proto.send_frame(Frame(opcode, payload))
        await self.flush()

    async def frames_until_close(self, timeout: float = 30) -> tuple[list[Frame], int | None]:
        """Every data frame until the server closes; and its close code."""
        frames: list[Frame] = []
        async with asyncio.timeout(timeout):
            while True:
                events = await self.read_events()
                for event in events:
                    if isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY):
                        frames.append(event)
                    elif isinstance(event, Frame) and event.opcode == Opcode.CLOSE:
                        close = self.proto.close_rcvd
                        return frames, close.code if close is not None else None
                if self.reader.at_eof():
                    close = self.proto.close_rcvd
                    return frames, close.code if close is not None else None

    def close(self) -> None:
        self.writer.close()
