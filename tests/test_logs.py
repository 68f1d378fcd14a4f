"""What ``beadhub serve`` writes to its log: one format with a timestamp on
every line (uvicorn's included), JSON lines on request, each line of a
call naming project, agent, method and latency, and never a key, a ticket
or a message body."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from hub.logs import ContextFilter, Formatter, redact, set_call
from protocol.client import HubClient
from tests.support import HubProcess, onboard, unique

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


async def _work(hub: HubProcess) -> dict[str, Any]:
    """Agents doing what they do, with secrets that must not be logged."""
    slug = unique("logs")
    alice = await onboard(hub.http_url, slug, "alice")
    bob = await onboard(hub.http_url, slug, "bob")
    body = "BODY-" + uuid.uuid4().hex
    async with (
        HubClient(hub.ws_url, alice["api_key"], reconnect=False) as a,
        HubClient(hub.ws_url, bob["api_key"], reconnect=False) as b,
    ):
        await a.call("mail.send", to=["bob"], subject="s", body=body)
        await b.next_event("mail")
        await a.call("chat.send", to=["bob"], body=body + "-chat")
        async with httpx.AsyncClient(base_url=hub.http_url, timeout=10) as http:
            ticket = (await http.post("/v1/auth/ticket", json={"api_key": alice["api_key"]})).json()
            headers = {"Authorization": f"Bearer {bob['api_key']}"}
            assert (await http.get("/v1/status", headers=headers)).status_code == 200
            # A ticket in a URL (the dashboard's socket), whatever the answer.
            await http.get(f"/v1/ws?ticket={ticket['ticket']}&cursor=1")
    return {"slug": slug, "alice": alice, "bob": bob, "body": body, "ticket": ticket["ticket"]}


def _secrets(work: dict[str, Any]) -> list[str]:
    return [work["alice"]["api_key"], work["bob"]["api_key"], work["ticket"], work["body"]]


@pytest.fixture
def serve(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[HubProcess] = []

    def _serve(*args: str, **env: str) -> HubProcess:
        hub = HubProcess(
            args=["--database-url", database_url, *args],
            env=env,
            log_path=tmp_path / f"hub-{len(started)}.log",
        )
        started.append(hub)
        return hub.start()

    yield _serve
    for hub in started:
        hub.stop()


async def test_json_lines_name_the_call_and_hold_no_secret(serve: Any) -> None:
    hub = serve("--log-format", "json", BEADHUB_LOG_LEVEL="debug")
    work = await _work(hub)
    assert hub.stop() == 0
    text = hub.log_path.read_text()
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= line.keys(), line
        datetime.fromisoformat(line["ts"])
    for secret in _secrets(work):
        assert secret not in text
    # Every WebSocket call has a line naming its project, agent and method.
    calls = [line for line in lines if line["logger"] == "beadhub.ws.calls"]
    mail = [c for c in calls if c.get("method") == "mail.send"]
    assert mail, calls
    assert mail[0]["project"] == work["slug"]
    assert mail[0]["agent"] == "alice"
    assert mail[0]["latency_ms"] >= 0
    # uvicorn's access line of a shim request names them too.
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    status = [a for a in access if "/v1/status" in a["message"]]
    assert status and status[0]["agent"] == "bob" and status[0]["project"] == work["slug"]
    assert status[0]["method"] == "GET /v1/status" and status[0]["latency_ms"] >= 0
    # The ticket in the socket URL is masked, the rest of the line kept.
    socket = [a for a in access if "/v1/ws" in a["message"]]
    assert socket and all("ticket=[redacted]&cursor=1" in a["message"] for a in socket), socket


async def test_text_lines_have_timestamps_and_no_warning_at_start(serve: Any) -> None:
    hub = serve()
    work = await _work(hub)
    assert hub.stop() == 0
    text = hub.log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert any(" uvicorn.access: " in line for line in lines)
    assert any(" beadhub: " in line and "ready" in line for line in lines)
    for line in lines:
        assert TIMESTAMP.match(line), line
        assert " WARNING " not in line and "Warning" not in line, line
    for secret in _secrets(work):
        assert secret not in text


def test_bad_log_format_is_refused(tmp_path: Path) -> None:
    hub = HubProcess(args=["--log-format", "xml"], log_path=tmp_path / "hub.log")
    with pytest.raises(RuntimeError, match="exited with 2"):
        hub.start(timeout=30)
    assert "--log-format" in hub.log()


def test_redaction_keeps_the_line_readable() -> None:
    assert redact("GET /v1/ws?cursor=3&ticket=bht_abcdefgh123 HTTP/1.1") == (
        "GET /v1/ws?cursor=3&ticket=[redacted] HTTP/1.1"
    )
    assert redact("Authorization: Bearer bh_0123456789abcdef") == (
        "Authorization: Bearer [redacted]"
    )
    assert redact("key aw_sk_0123456789abcdefXYZ was revoked") == "key [redacted] was revoked"
    assert redact("reservation src/api/** granted") == "reservation src/api/** granted"


def test_a_traceback_is_redacted_too() -> None:
    record = logging.LogRecord("beadhub", logging.ERROR, __file__, 1, "failed", (), None)
    try:
        raise ValueError("bad key bh_0123456789abcdef")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    set_call("proj", "alice", "mail.send")
    ContextFilter().filter(record)
    line = orjson.loads(Formatter(json=True).format(record))
    assert "bh_0123456789abcdef" not in line["error"] and "[redacted]" in line["error"]
    assert (line["project"], line["agent"], line["method"]) == ("proj", "alice", "mail.send")
