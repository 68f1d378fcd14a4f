"""The size bounds hold the hub's memory flat (docs/security.md, "Sizes"):
a 512 MiB body and a 64 MiB header are refused while they arrive, and a
session that stops reading is closed at its byte bound and resumes with
nothing lost. The hub is a real ``beadhub serve`` process; its memory is
read with psutil while the test pushes bytes at it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import psutil
import pytest

from protocol.client import HubClient
from tests.rawws import RawSocket
from tests.support import HubProcess, onboard, unique

pytestmark = pytest.mark.timeout(240)

MiB = 1024 * 1024
QUEUE_BOUND = 1 * MiB
#: How much the hub's resident memory may grow while it refuses what it is
#: sent (the interpreter's own churn, a few requests' buffers).
FLAT = 40 * MiB


@pytest.fixture(scope="module")
def hub_process(database_url: str) -> Iterator[HubProcess]:
    hub = HubProcess(
        env={
            "DATABASE_URL": database_url,
            "BEADHUB_BUS_URL": "memory://",
            "BEADHUB_WS_MAX_QUEUED_BYTES": str(QUEUE_BOUND),
            "BEADHUB_LOG_LEVEL": "warning",
        }
    ).start()
    try:
        yield hub
    finally:
        hub.stop()


class PeakMemory:
    """The process's largest resident size while the block runs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.before


@contextlib.asynccontextmanager
async def tcp(hub: HubProcess) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        yield reader, writer
    finally:
        writer.close()


async def push(writer: asyncio.StreamWriter, total: int, chunk: bytes) -> int:
    """Write up to ``total`` bytes until the hub stops taking them."""
    sent = 0
    with contextlib.suppress(ConnectionError, OSError):
        # The test may close the writer while this runs: stop writing then.
        while sent < total and not writer.is_closing():
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 10)
            sent += len(chunk)
    return sent


async def status_of(reader: asyncio.StreamReader) -> int:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    return int(head.split(b" ", 2)[1])


async def test_a_512_mib_body_is_refused_with_memory_flat(hub_process: HubProcess):
    chunk = b"x" * MiB
    with PeakMemory(hub_process.proc.pid) as memory:  # type: ignore[union-attr]
        # Declared up front: answered before a byte of it is read.
        async with tcp(hub_process) as (reader, writer):
            writer.write(
                b"POST /v1/init HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 536870912\r\n\r\n"
            )
            assert await status_of(reader) == 413
        # Chunked, so the size is not known until it has been read: the hub
        # stops at its bound.
        async with tcp(hub_process) as (reader, writer):
            writer.write(
                b"POST /v1/init HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
            pushing = asyncio.ensure_future(push(writer, 512 * MiB, framed))
            assert await status_of(reader) == 413
            writer.close()
            sent = await pushing
    assert sent < 512 * MiB
    assert memory.growth < FLAT, f"the hub grew by {memory.growth / MiB:.0f} MiB"


async def test_a_64_mib_header_is_refused_while_it_arrives(hub_process: HubProcess):
    with PeakMemory(hub_process.proc.pid) as memory:  # type: ignore[union-attr]
        async with tcp(hub_process) as (reader, writer):
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            pushing = asyncio.ensure_future(push(writer, 64 * MiB, b"a" * 65536))
            assert await status_of(reader) == 431
            sent = await pushing
    assert sent < 64 * MiB
    assert memory.growth < FLAT, f"the hub grew by {memory.growth / MiB:.0f} MiB"


async def test_a_reader_that_stops_is_closed_at_its_byte_bound_and_loses_nothing(
    hub_process: HubProcess,
):
    slug = unique("proj")
    reader = await onboard(hub_process.http_url, slug, "reader")
    sender = await onboard(hub_process.http_url, slug, "sender")
    body = "m" * 60_000
    mails = 400  # 24 MB of events for a reader whose queue may hold 1 MiB
    async with HubClient(hub_process.ws_url, sender["api_key"]) as s:
        start = (await s.call("activity.recent", limit=1))["cursor"]
        raw = await RawSocket.connect(
            f"{hub_process.ws_url}/v1/ws",
            {"Authorization": f"Bearer {reader['api_key']}"},
            receive_buffer=4096,
        )
        sent: list[str] = []
        with PeakMemory(hub_process.proc.pid) as memory:  # type: ignore[union-attr]
            for n in range(mails):
                answer = await s.call("mail.send", to=["reader"], subject=f"s{n}", body=body)
                sent.append(answer["message_id"])
        # Now read what the hub managed to send before it gave up.
        frames, code = await raw.frames_until_close(60)
        raw.close()
    assert code == 1013
    received = [orjson.loads(f.data) for f in frames]
    assert len(received) < mails, "the reader was never held back"
    assert memory.growth < FLAT, f"the hub grew by {memory.growth / MiB:.0f} MiB"
    # Resuming from the cursor before the flood brings every mail.
    got: set[str] = set()
    async with HubClient(hub_process.ws_url, reader["api_key"], cursor=int(start)) as r:
        while not set(sent) <= got:
            event = await r.next_event("mail", timeout=20)
            got.add(event["data"]["message_id"])
    assert set(sent) <= got
