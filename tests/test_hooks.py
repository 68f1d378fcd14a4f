"""``beadhub hook <event>`` run exactly as Claude Code runs a command hook:
the event's JSON on stdin, in the worktree, and JSON read from stdout; and
``beadhub mcp init`` / ``install`` writing what those need."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.transport.mcp import config
from protocol.client import HubClient
from tests.support import RunningHub, grant_coordinator, onboard, unique


def beadhub(
    *args: str, cwd: Path, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def clean_env(home: Path) -> dict[str, str]:
    """No BEADHUB_* variables: the worktree's files must be enough."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEADHUB_", "AW_"))}
    return {**env, "HOME": str(home), "AW_CONFIG_PATH": str(home / "aw.yaml")}


def claude_input(event: str, cwd: Path, **fields: Any) -> str:
    """The JSON Claude Code writes to a command hook's stdin."""
    return json.dumps(
        {
            "session_id": "8f5e4c1a-2b3d-4e5f-9a8b-7c6d5e4f3a2b",
            "transcript_path": str(cwd / ".claude" / "transcript.jsonl"),
            "cwd": str(cwd),
            "permission_mode": "default",
            "hook_event_name": event,
            **fields,
        }
    )


@pytest.fixture
def worktree(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    tree = tmp_path / "widgets"
    tree.mkdir()
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    return tree, clean_env(tmp_path)


async def test_init_writes_what_bdh_writes_and_find_reads_it(
    hub_server: RunningHub, worktree: tuple[Path, dict[str, str]]
) -> None:
    tree, env = worktree
    slug = unique("hook")
    done = await asyncio.to_thread(
        beadhub,
        "mcp",
        "init",
        "--url",
        hub_server.http_url,
        "--project",
        slug,
        "--alias",
        "alice",
        "--role",
        "backend",
        cwd=tree,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "as alice" in done.stdout
    settings = read_yaml(tree / ".beadhub")
    assert settings["beadhub_url"] == hub_server.http_url and settings["alias"] == "alice"
    context = read_yaml(tree / ".aw" / "context")
    aw = read_yaml(Path(env["AW_CONFIG_PATH"]))
    account = aw["accounts"][context["default_account"]]
    assert account["agent_alias"] == "alice" and account["api_key"]
    found = config.find(tree, env)
    assert found.url == hub_server.http_url and found.api_key == account["api_key"]
    assert found.alias == "alice"
    # The environment wins, as for bdh.
    other = config.find(tree, {**env, "BEADHUB_API_KEY": "aw_sk_x", "BEADHUB_URL": "http://h:1"})
    assert (other.url, other.api_key) == ("http://h:1", "aw_sk_x")
    with pytest.raises(config.NotConfigured, match="bdh :init"):
        config.find(tree.parent, {**env, "AW_CONFIG_PATH": str(tree.parent / "none.yaml")})


async def test_hooks_hand_the_model_what_is_new_and_record_it_shown(
    hub_server: RunningHub, worktree: tuple[Path, dict[str, str]]
) -> None:
    tree, env = worktree
    slug = unique("hook")
    init = await asyncio.to_thread(
        beadhub,
        "mcp",
        "init",
        "--url",
        hub_server.http_url,
        "--project",
        slug,
        "--alias",
        "alice",
        cwd=tree,
        env=env,
    )
    assert init.returncode == 0, init.stderr
    alice_key = config.find(tree, env).api_key
    bob = await onboard(hub_server.http_url, slug, "bob")
    lead = await onboard(hub_server.http_url, slug, "lead", role="coordinator")
    await grant_coordinator(hub_server, lead)  # a declared role grants nothing

    async def hook(event: str, **fields: Any) -> dict[str, Any]:
        done = await asyncio.to_thread(
            beadhub, "hook", event, cwd=tree, env=env, stdin=claude_input(event, tree, **fields)
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    async with (
        HubClient(hub_server.ws_url, alice_key) as alice,
        HubClient(hub_server.ws_url, bob["api_key"]) as b,
        HubClient(hub_server.ws_url, lead["api_key"]) as coordinator,
    ):
        assert await hook("SessionStart", source="startup") == {}

        # Alice changes a file that bob then reserves.
        (tree / "src" / "api").mkdir(parents=True)
        (tree / "src" / "api" / "db.py").write_text("x = 1\n")
        escalation = await alice.call("escalations.create", subject="Schema?", situation="v1/v2")
        await coordinator.call(
            "escalations.respond", escalation_id=escalation["escalation_id"], response="v2."
        )
        mail = await b.call("mail.send", to=["alice"], subject="CI", body="the build is red")
        await b.call("reservations.acquire", paths=["src/api/**"], reason="db refactor")
        waiting = asyncio.create_task(
            b.call("chat.send", to=["alice"], body="can you look at db.py?", wait=60)
        )
        await alice.next_event("chat.message")

        start = await hook("SessionStart", source="startup")
        out = start["hookSpecificOutput"]
        assert out["hookEventName"] == "SessionStart"
        context = out["additionalContext"]
        assert "Mail from bob" in context and "the build is red" in context
        assert mail["message_id"] in context
        assert "bob is WAITING for your reply" in context and "can you look at db.py?" in context
        assert "lead answered your escalation" in context and "v2." in context
        assert "You are changing src/api/db.py, but bob has reserved src/api/**" in context
        assert "db refactor" in context

        receipts = await b.call("mail.receipts", message_ids=[mail["message_id"]])
        assert receipts["messages"][0]["state"] == "shown"

        # Shown once: the next prompt carries only what is still open.
        prompt = await hook("UserPromptSubmit", prompt="carry on")
        context = prompt["hookSpecificOutput"]["additionalContext"]
        assert "the build is red" not in context and "v2." not in context
        assert "can you look at db.py?" in context

        # Bob waits on alice: Stop keeps her going, once.
        stop = await hook("Stop", stop_hook_active=False)
        assert stop["decision"] == "block" and "bob is waiting" in stop["reason"]
        assert await hook("Stop", stop_hook_active=True) == {}

        session_id = (await alice.call("chat.pending"))["pending"][0]["session_id"]
        await alice.call("chat.send", session_id=session_id, body="on it")
        assert (await waiting)["status"] == "replied"
        await b.call("reservations.release", paths=["src/api/**"])
        assert await hook("Stop", stop_hook_active=False) == {}
        assert (
            await hook(
                "PostToolUse",
                tool_name="Bash",
                tool_input={"command": "ls"},
                tool_response={"stdout": ""},
                tool_use_id="toolu_01",
            )
            == {}
        )


async def test_a_hook_without_configuration_answers_empty_and_says_why(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    done = await asyncio.to_thread(
        beadhub,
        "hook",
        "UserPromptSubmit",
        cwd=tmp_path,
        env=env,
        stdin=claude_input("UserPromptSubmit", tmp_path, prompt="hi"),
    )
    assert done.returncode == 0
    assert json.loads(done.stdout) == {}
    assert "bdh :init" in done.stderr
    unreachable = await asyncio.to_thread(
        beadhub,
        "hook",
        "SessionStart",
        cwd=tmp_path,
        env={**env, "BEADHUB_URL": "http://127.0.0.1:9", "BEADHUB_API_KEY": "aw_sk_x"},
        stdin=claude_input("SessionStart", tmp_path, source="startup"),
    )
    assert unreachable.returncode == 0 and json.loads(unreachable.stdout) == {}
    assert "did not answer" in unreachable.stderr


def test_install_writes_claude_and_codex_configuration_and_merges(tmp_path: Path) -> None:
    (tmp_path / ".mcp.json").write_text(json.dumps({"mcpServers": {"other": {"command": "x"}}}))
    env = clean_env(tmp_path)
    first = beadhub(
        "mcp", "install", "--claude", "--codex", "--dir", str(tmp_path), cwd=tmp_path, env=env
    )
    assert first.returncode == 0, first.stderr
    for name in (".mcp.json", ".claude/settings.json", ".codex/config.toml", ".codex/hooks.json"):
        assert f"wrote {tmp_path / name}" in first.stdout
    servers = json.loads((tmp_path / ".mcp.json").read_text())["mcpServers"]
    assert servers["other"] == {"command": "x"}
    assert servers["beadhub"]["args"] == ["mcp"]
    settings = json.loads((tmp_path / ".claude" / "settings.json").read_text())
    for event in ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"):
        (group,) = settings["hooks"][event]
        (entry,) = group["hooks"]
        assert entry["type"] == "command" and entry["command"].endswith(f" hook {event}")
    import tomllib

    codex = tomllib.loads((tmp_path / ".codex" / "config.toml").read_text())
    assert codex["mcp_servers"]["beadhub"]["args"] == ["mcp"]
    assert json.loads((tmp_path / ".codex" / "hooks.json").read_text())["hooks"].keys() == {
        "SessionStart",
        "UserPromptSubmit",
        "PostToolUse",
        "Stop",
    }
    # Twice is the same as once.
    before = {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    again = beadhub(
        "mcp", "install", "--claude", "--codex", "--dir", str(tmp_path), cwd=tmp_path, env=env
    )
    assert again.returncode == 0
    assert {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert beadhub("mcp", "install", cwd=tmp_path, env=env).returncode == 2
