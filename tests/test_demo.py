"""The README's scripted demo, run for real against a hub."""

from __future__ import annotations

import asyncio
import signal
import sys
from urllib.parse import parse_qs, urlsplit

import httpx

from hub.demo import run
from protocol.client import HubClient
from tests.support import ROOT, free_port


async def test_the_demo_story_plays_out(hub_server):
    lines: list[str] = []
    result = await run(
        hub_server.http_url, say=lines.append, operator_token=hub_server.hub.operator_token
    )
    assert result["online"] == ["alice-frontend", "bob-backend", "carol-coordinator"]
    assert set(result["ready"]) == {"bd-10", "bd-12", "bd-13"}
    assert result["chat"]["status"] == "replied"
    assert result["chat"]["reply"]["body"] == "Yes, I'll take bd-12."
    assert result["alice_claim"] == "bd-12 is being worked on by bob-backend (Maria)"
    assert result["reservations"] == [
        ("src/api/**", "bob-backend"),
        ("src/web/list.js", "alice-frontend"),
    ]
    assert result["escalation_response"] == "Cursor pagination, like the mail inbox."
    assert any("refused" in line for line in lines)


class Lines:
    """What the demo says, with a way to wait for a line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    def say(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()

    async def wait_for(self, text: str, timeout: float = 30) -> str:
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                self._changed.clear()
                await self._changed.wait()


async def test_demo_keep_prints_a_working_link_and_keeps_the_agents_online(hub_server):
    said = Lines()
    until = asyncio.Event()
    demo = asyncio.create_task(
        run(
            hub_server.http_url,
            say=said.say,
            keep=True,
            until=until,
            operator_token=hub_server.hub.operator_token,
        )
    )
    try:
        link_line = await said.wait_for("watch it in the dashboard")
        assert said.lines.index(link_line) == 1  # before the story starts
        link = link_line.rsplit(" ", 1)[1]
        assert link.startswith(hub_server.http_url + "/#signin=")
        await said.wait_for("Ctrl-C to stop")

        # The link opens the dashboard signed in to the demo project as its
        # human, the way the page does it: the fragment's one-time token
        # traded for a human ticket.
        token = parse_qs(urlsplit(link).fragment)["signin"][0]
        async with httpx.AsyncClient(base_url=hub_server.http_url, timeout=10) as http:
            page = await http.get(urlsplit(link).path)
            signed_in = await http.post("/v1/auth/signin", json={"token": token})
        assert page.status_code == 200 and "<html" in page.text
        assert signed_in.status_code == 200
        ticket = signed_in.json()["ticket"]
        project = said.lines[0].split()[1].rstrip(":")
        assert signed_in.json()["project_slug"] == project

        async with HubClient(hub_server.ws_url, ticket=ticket, reconnect=False) as human:
            online = (await human.call("presence.list", online_only=True))["agents"]
            assert sorted(a["alias"] for a in online) == [
                "alice-frontend",
                "bob-backend",
                "carol-coordinator",
            ]
            # alice's question waits for the watcher, who answers it.
            pending = (await human.call("escalations.list", status="pending"))["escalations"]
            assert [e["subject"] for e in pending] == ["Ship the widget list today?"]
            await human.call(
                "escalations.respond", escalation_id=pending[0]["escalation_id"], response="Ship!"
            )
            await said.wait_for("alice got your answer: 'Ship!'")
            assert not demo.done()  # still online after the story

            until.set()
            result = await asyncio.wait_for(demo, 30)
            assert result["link"] == link
            gone = await human.next_event(
                "presence", where=lambda e: e["data"]["online"] is False, timeout=10
            )
            assert gone["data"]["alias"] in {"alice-frontend", "bob-backend", "carol-coordinator"}
    finally:
        until.set()
        await asyncio.wait_for(demo, 30)


async def test_beadhub_demo_keep_runs_until_ctrl_c(hub_server, tmp_path):
    # On the hub's host: the operator token where beadhub serve writes it.
    (tmp_path / "operator-token").write_text(hub_server.hub.operator_token)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", "demo", "--keep", "--pace", "0",
        "--url", hub_server.http_url, "--data-dir", str(tmp_path),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    out: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not out or "Ctrl-C to stop" not in out[-1]:
                out.append((await proc.stdout.readline()).decode())
                assert out[-1], "the demo ended before keeping the agents online"
        assert any(f"{hub_server.http_url}/#signin=" in line for line in out)
        proc.send_signal(signal.SIGINT)
        rest, errors = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, errors.decode()
    assert b"Traceback" not in errors
    assert b"demo stopped" in rest


async def test_beadhub_demo_without_a_hub_says_so_in_one_line():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", "demo", "--url", f"http://127.0.0.1:{free_port()}",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, errors = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    (line,) = errors.decode().splitlines()
    assert "cannot reach the hub at http://127.0.0.1:" in line and "start it (make run)" in line
