"""``beadhub guard``: a real ``git commit`` refused while another agent
holds a file, allowed after the release or with a recorded override; the
Claude Code PreToolUse hook refusing the edit; both letting the work go
on when the hub is down."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from protocol.client import HubClient
from tests.support import free_port, onboard, unique

pytestmark = pytest.mark.timeout(60)

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Alice",
    "GIT_AUTHOR_EMAIL": "alice@example.com",
    "GIT_COMMITTER_NAME": "Alice",
    "GIT_COMMITTER_EMAIL": "alice@example.com",
}


async def run(
    cwd: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """A real process, off the event loop that serves the hub."""
    return await asyncio.to_thread(
        subprocess.run,
        list(args),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **GIT_ENV, **env},
    )


def beadhub(*args: str) -> list[str]:
    return [sys.executable, "-m", "hub.cli", *args]


@pytest.fixture
async def repo(tmp_path: Path) -> Path:
    await run(tmp_path, "git", "init", "-q", "-b", "main")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("print('v1')\n")
    (tmp_path / "README.md").write_text("hi\n")
    return tmp_path


@pytest.fixture
async def agents(hub_server) -> Any:
    slug = unique("proj")
    alice = await onboard(hub_server.http_url, slug, "alice")
    bob = await onboard(hub_server.http_url, slug, "bob")
    async with HubClient(hub_server.ws_url, bob["api_key"]) as b:
        yield alice, bob, b


async def commit(repo: Path, message: str, **env: str) -> subprocess.CompletedProcess[str]:
    await run(repo, "git", "add", "-A")
    return await run(repo, "git", "commit", "-q", "-m", message, **env)


async def test_a_commit_touching_anothers_file_is_refused_until_it_is_released(
    hub_server, agents, repo
):
    alice, _, b = agents
    installed = await run(
        repo,
        *beadhub("guard", "install", "--url", hub_server.http_url, "--api-key", alice["api_key"]),
    )
    assert installed.returncode == 0, installed.stderr
    await b.call("reservations.acquire", paths=["src/**"], ttl_seconds=600)

    refused = await commit(repo, "touch app")
    assert refused.returncode == 1
    assert "src/app.py (src/**) is reserved by bob until" in refused.stderr
    assert "BEADHUB_GUARD_OVERRIDE" in refused.stderr
    log = await run(repo, "git", "log", "--oneline")
    assert log.stdout == ""  # nothing was committed

    # The override goes through, and the team hears of it.
    forced = await commit(repo, "forced", BEADHUB_GUARD_OVERRIDE="hotfix, bob agreed")
    assert forced.returncode == 0, forced.stderr
    event = await b.next_event("guard.override")
    assert event["data"]["alias"] == "alice" and event["data"]["holders"] == ["bob"]
    assert event["data"]["reason"] == "hotfix, bob agreed"
    assert event["data"]["paths"] == ["src/app.py"]

    (repo / "src" / "app.py").write_text("print('v2')\n")
    assert (await commit(repo, "again")).returncode == 1
    await b.call("reservations.release", paths=["src/**"])
    allowed = await commit(repo, "after release")
    assert allowed.returncode == 0, allowed.stderr
    # A file nobody else holds never needed any of this.
    (repo / "README.md").write_text("hello\n")
    assert (await commit(repo, "readme")).returncode == 0


async def test_the_commit_goes_on_with_a_warning_when_the_hub_is_down(agents, repo):
    alice, _, _ = agents
    down = f"http://127.0.0.1:{free_port()}"
    await run(repo, *beadhub("guard", "install", "--url", down, "--api-key", alice["api_key"]))
    done = await commit(repo, "offline")
    assert done.returncode == 0
    assert "unreachable" in done.stderr and "going on" in done.stderr


async def test_the_pretooluse_hook_denies_an_edit_of_anothers_file(hub_server, agents, repo):
    alice, _, b = agents
    await run(
        repo,
        *beadhub("guard", "install", "--url", hub_server.http_url, "--api-key", alice["api_key"]),
    )
    settings = json.loads((repo / ".claude" / "settings.local.json").read_text())
    [entry] = settings["hooks"]["PreToolUse"]
    assert entry["matcher"] == "Edit|Write|MultiEdit|NotebookEdit"
    await b.call("reservations.acquire", paths=["src/app.py"])

    def hook_input(tool: str, path: Path) -> str:
        # As Claude Code sends it: absolute paths, the session's cwd.
        return json.dumps(
            {
                "session_id": "abc123",
                "transcript_path": "/tmp/t.jsonl",
                "cwd": str(repo),
                "permission_mode": "default",
                "hook_event_name": "PreToolUse",
                "tool_name": tool,
                "tool_input": {"file_path": str(path), "old_string": "v1", "new_string": "v2"},
            }
        )

    denied = await run(
        repo, *beadhub("guard", "pretooluse"), stdin=hook_input("Edit", repo / "src/app.py")
    )
    assert denied.returncode == 0, denied.stderr
    answer = json.loads(denied.stdout)["hookSpecificOutput"]
    assert answer["hookEventName"] == "PreToolUse"
    assert answer["permissionDecision"] == "deny"
    assert "src/app.py is reserved by bob" in answer["permissionDecisionReason"]

    for tool, path in (("Write", repo / "README.md"), ("Read", repo / "src/app.py")):
        allowed = await run(repo, *beadhub("guard", "pretooluse"), stdin=hook_input(tool, path))
        assert allowed.returncode == 0 and allowed.stdout == "", (tool, allowed.stdout)

    # Hub down: a warning, no decision, the edit goes on.
    down = {"BEADHUB_URL": f"http://127.0.0.1:{free_port()}", "BEADHUB_API_KEY": alice["api_key"]}
    warned = await run(
        repo, *beadhub("guard", "pretooluse"), stdin=hook_input("Edit", repo / "src/app.py"), **down
    )
    assert warned.returncode == 0
    answer = json.loads(warned.stdout)
    assert "hookSpecificOutput" not in answer and "unreachable" in answer["systemMessage"]


def codex_hook_input(repo: Path, patch: str) -> str:
    """What Codex writes on a PreToolUse hook's stdin for an ``apply_patch``
    call: the fields of ``PreToolUseCommandInput`` (openai/codex,
    codex-rs/hooks/src/schema.rs, serialized by ``command_input_json`` in
    codex-rs/hooks/src/events/pre_tool_use.rs), ``tool_name`` from
    ``HookToolName::apply_patch()`` and ``tool_input`` ``{"command": patch}``
    (codex-rs/core/src/tools/handlers/apply_patch.rs)."""
    return json.dumps(
        {
            "session_id": "019ab7d4-42dc-7402-88e8-476998ceb487",
            "turn_id": "turn-1",
            "transcript_path": None,
            "cwd": str(repo),
            "hook_event_name": "PreToolUse",
            "model": "gpt-5-codex",
            "permission_mode": "default",
            "tool_name": "apply_patch",
            "tool_input": {"command": patch},
            "tool_use_id": "call-apply-patch",
        }
    )


def patch(*sections: str) -> str:
    return "*** Begin Patch\n" + "".join(sections) + "*** End Patch\n"


UPDATE_APP = "*** Update File: src/app.py\n@@\n-print('v1')\n+print('v2')\n"
ADD_DOC = "*** Add File: docs/new.md\n+hello\n"
MOVE_README = "*** Update File: README.md\n*** Move to: src/app.py\n@@\n-hi\n+hello\n"
UPDATE_README = "*** Update File: README.md\n@@\n-hi\n+hello\n"


async def test_the_codex_hook_denies_a_patch_into_anothers_file(hub_server, agents, repo):
    alice, _, b = agents
    # Codex's hooks of `beadhub mcp install --codex` are there already: kept.
    (repo / ".codex").mkdir()
    mcp_hooks = {"SessionStart": [{"hooks": [{"type": "command", "command": "x hook"}]}]}
    (repo / ".codex" / "hooks.json").write_text(json.dumps({"hooks": mcp_hooks}))
    installed = await run(
        repo,
        *beadhub("guard", "install", "--codex", "--url", hub_server.http_url,
                 "--api-key", alice["api_key"]),
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    hooks = json.loads((repo / ".codex" / "hooks.json").read_text())["hooks"]
    assert hooks["SessionStart"] == mcp_hooks["SessionStart"]
    [entry] = hooks["PreToolUse"]
    assert entry["matcher"] == "apply_patch"
    [handler] = entry["hooks"]
    assert handler["type"] == "command" and handler["timeout"] == 10
    await b.call("reservations.acquire", paths=["src/app.py"])

    async def codex_runs(the_patch: str, **env: str) -> subprocess.CompletedProcess[str]:
        # As Codex runs a command hook: through the shell, in the session's cwd.
        return await run(
            repo, "sh", "-c", handler["command"], stdin=codex_hook_input(repo, the_patch), **env
        )

    for denied_patch in (patch(ADD_DOC, UPDATE_APP), patch(MOVE_README)):
        denied = await codex_runs(denied_patch)
        assert denied.returncode == 0, denied.stderr
        answer = json.loads(denied.stdout)["hookSpecificOutput"]
        assert answer["hookEventName"] == "PreToolUse"
        assert answer["permissionDecision"] == "deny"
        assert "src/app.py is reserved by bob" in answer["permissionDecisionReason"]
        assert "docs/new.md" not in answer["permissionDecisionReason"]

    allowed = await codex_runs(patch(ADD_DOC, UPDATE_README))
    assert allowed.returncode == 0 and allowed.stdout == "", allowed.stdout
    await b.call("reservations.release", paths=["src/app.py"])
    after = await codex_runs(patch(UPDATE_APP))
    assert after.returncode == 0 and after.stdout == "", after.stdout

    # Hub down: a warning (Codex shows systemMessage), no decision, the patch goes on.
    await b.call("reservations.acquire", paths=["src/app.py"])
    down = {"BEADHUB_URL": f"http://127.0.0.1:{free_port()}", "BEADHUB_API_KEY": alice["api_key"]}
    warned = await codex_runs(patch(UPDATE_APP), **down)
    assert warned.returncode == 0
    answer = json.loads(warned.stdout)
    assert "hookSpecificOutput" not in answer and "unreachable" in answer["systemMessage"]


def test_patch_paths_reads_every_file_a_codex_patch_writes() -> None:
    from hub.guard import patch_paths

    text = patch(ADD_DOC, UPDATE_APP, MOVE_README, "*** Delete File: old.txt\n", UPDATE_APP)
    assert patch_paths(text) == ["docs/new.md", "src/app.py", "README.md", "old.txt"]
    assert patch_paths("print('not a patch')\n*** Add File: \n") == []
