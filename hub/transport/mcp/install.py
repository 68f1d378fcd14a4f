"""``beadhub mcp install --claude | --codex``: the MCP server and the hooks
in the project's own configuration files.

- Claude Code: ``.mcp.json`` (``mcpServers.beadhub``: ``beadhub mcp``) and
  ``.claude/settings.json`` (``hooks``: SessionStart, UserPromptSubmit,
  PostToolUse and Stop run ``beadhub hook <event>``).
- Codex: ``.codex/config.toml`` (``[mcp_servers.beadhub]``) and
  ``.codex/hooks.json`` (the same four hooks, in the same shape).

Existing files are merged, never replaced: other servers and hooks stay,
and installing twice changes nothing.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from hub.transport.hooks import EVENTS

SERVER = "beadhub"
HOOK_TIMEOUT_SECONDS = 10


def command() -> str:
    """The beadhub executable to run: this one, so no PATH is needed."""
    here = Path(sys.argv[0])
    if here.name == "beadhub" and here.exists():
        return str(here.resolve())
    return shutil.which("beadhub") or "beadhub"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text() or "{}")
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _add_hooks(settings: dict[str, Any], exe: str) -> None:
    hooks = settings.setdefault("hooks", {})
    for event in EVENTS:
        wanted = f"{exe} hook {event}"
        groups = hooks.setdefault(event, [])
        present = any(
            h.get("command") == wanted for group in groups for h in group.get("hooks", [])
        )
        if not present:
            entry = {"type": "command", "command": wanted, "timeout": HOOK_TIMEOUT_SECONDS}
            groups.append({"hooks": [entry]})


def claude(project: Path, exe: str) -> list[Path]:
    mcp_json = project / ".mcp.json"
    servers = _read_json(mcp_json)
    servers.setdefault("mcpServers", {})[SERVER] = {
        "type": "stdio",
        "command": exe,
        "args": ["mcp"],
    }
    _write_json(mcp_json, servers)
    settings_path = project / ".claude" / "settings.json"
    settings = _read_json(settings_path)
    _add_hooks(settings, exe)
    _write_json(settings_path, settings)
    return [mcp_json, settings_path]


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def codex(project: Path, exe: str) -> list[Path]:
    config = project / ".codex" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    text = config.read_text() if config.exists() else ""
    if f"[mcp_servers.{SERVER}]" not in text:
        block = f'[mcp_servers.{SERVER}]\ncommand = {_toml_string(exe)}\nargs = ["mcp"]\n'
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block
        config.write_text(text)
    hooks_path = project / ".codex" / "hooks.json"
    hooks = _read_json(hooks_path)
    _add_hooks(hooks, exe)
    _write_json(hooks_path, hooks)
    return [config, hooks_path]


def install(project: Path, *, for_claude: bool, for_codex: bool) -> list[Path]:
    exe = command()
    written: list[Path] = []
    if for_claude:
        written += claude(project, exe)
    if for_codex:
        written += codex(project, exe)
    return written
