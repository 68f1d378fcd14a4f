"""A human's actions from the hub's host: ``beadhub serve`` hands its
operator a credential (a sign-in link on the terminal, a token file for
the CLI), and ``beadhub signin | requests | admit | keys | audit`` use it."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import stat
import sys
from pathlib import Path

import httpx

from tests.shim import bdh_init_body
from tests.support import ROOT, HubProcess, RunningHub, free_port, onboard, unique


async def beadhub(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_admits_manages_keys_and_signs_humans_in(hub_server: RunningHub, tmp_path):
    (tmp_path / "operator-token").write_text(hub_server.hub.operator_token)
    slug = unique("proj")
    await onboard(hub_server.http_url, slug, "alice")
    common = ["--url", hub_server.http_url, "--data-dir", str(tmp_path), "--project", slug]

    code, out, _ = await beadhub("join-policy", "approval", *common)
    assert code == 0 and '"join_policy": "approval"' in out
    body = bdh_init_body(slug, "newcomer")
    async with httpx.AsyncClient(base_url=hub_server.http_url, timeout=10) as http:
        pending = await http.post("/v1/init", json=body)
        assert "pending_validation" in pending.text
        request_id = pending.json()["data"]["request_id"]
        code, out, _ = await beadhub("requests", *common)
        assert code == 0 and request_id in out and "newcomer" in out
        code, out, _ = await beadhub("admit", request_id, *common)
        assert code == 0 and '"status": "admitted"' in out
        joined = await http.post("/v1/init", json=body)
        assert joined.status_code == 200, joined.text

        code, out, _ = await beadhub("keys", "list", *common)
        assert code == 0 and "newcomer" in out and joined.json()["api_key"] not in out
        code, out, _ = await beadhub("keys", "rotate", joined.json()["agent_id"], *common)
        assert code == 0 and '"api_key"' in out
        as_old = {"Authorization": f"Bearer {joined.json()['api_key']}"}
        assert (await http.get("/v1/status", headers=as_old)).status_code == 401

        code, out, _ = await beadhub("signin", "--human", "Ana", *common)
        assert code == 0
        link = re.search(r"#signin=(\S+)", out)
        assert link, out
        signed_in = await http.post("/v1/auth/signin", json={"token": link.group(1)})
        assert signed_in.status_code == 200 and signed_in.json()["human_name"] == "Ana"

    code, out, _ = await beadhub("audit", *common)
    assert code == 0
    assert "join.admit" not in out  # the CLI goes through HTTP routes:
    assert "POST /v1/join-requests/{request_id}/admit" in out and "human:operator" in out


async def test_the_cli_off_the_hub_host_says_where_the_token_is(tmp_path):
    code, _, err = await beadhub(
        "requests", "--project", "x", "--url", f"http://127.0.0.1:{free_port()}",
        "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert code != 0 and "no operator token" in err and "operator-token" in err


def _serve_on_a_terminal(database_url: str, data_dir: Path, port: int) -> tuple[int, int]:
    """``beadhub serve`` with a terminal for its output, as a person runs it."""
    master, slave = pty.openpty()
    pid = os.fork()
    if pid == 0:  # the child: a hub whose stderr is a terminal
        os.setsid()
        os.dup2(slave, 1)
        os.dup2(slave, 2)
        os.chdir(ROOT)
        os.execv(
            sys.executable,
            [sys.executable, "-m", "hub.cli", "serve", "--port", str(port),
             "--database-url", database_url, "--data-dir", str(data_dir)],
        )  # fmt: skip
    os.close(slave)
    return pid, master


async def test_serve_prints_the_operator_link_on_a_terminal_and_never_to_a_log(
    database_url: str, tmp_path
):
    port = free_port()
    pid, master = _serve_on_a_terminal(database_url, tmp_path / "tty", port)
    seen = b""
    try:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(60):
            while b"#signin=" not in seen or b"\n" not in seen.split(b"#signin=")[1]:
                seen += await loop.run_in_executor(None, os.read, master, 4096)
        link = re.search(rb"http://127\.0\.0\.1:\d+/#signin=(\S+)", seen)
        assert link, seen
        token = link.group(1).decode()
        token_file = tmp_path / "tty" / "operator-token"
        assert token_file.read_text().strip() == token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            slug = unique("proj")
            await onboard(f"http://127.0.0.1:{port}", slug, "alice")
            signed_in = await http.post(
                "/v1/auth/signin", json={"token": token, "project_slug": slug}
            )
            assert signed_in.status_code == 200 and signed_in.json()["kind"] == "human"
    finally:
        os.kill(pid, 2)
        await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
        os.close(master)

    # Into a log file (a service manager, nohup): where to find it, not the token.
    hub = HubProcess(
        env={"DATABASE_URL": database_url},
        args=["--data-dir", str(tmp_path / "log")],
        log_path=tmp_path / "hub.log",
    )
    await asyncio.to_thread(hub.start)
    try:
        token = (tmp_path / "log" / "operator-token").read_text().strip()
        log = hub.log()
        assert "beadhub signin" in log and token not in log
    finally:
        await asyncio.to_thread(hub.stop)
