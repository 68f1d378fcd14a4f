"""``beadhub guard``: reservations that stop the edit, not only inform.

- ``beadhub guard install`` (in a git work tree) writes a git pre-commit
  hook and a Claude Code PreToolUse hook (``.claude/settings.local.json``,
  matcher ``Edit|Write|MultiEdit|NotebookEdit``); with ``--codex`` also
  Codex's PreToolUse hook (``.codex/hooks.json``, matcher ``apply_patch``,
  Codex's one file-editing tool). It keeps the hub's URL and the agent's
  key in ``<git dir>/beadhub-guard.json`` (mode 600; ``BEADHUB_URL`` /
  ``BEADHUB_API_KEY`` override it).
- ``beadhub guard pre-commit`` refuses a commit that touches a file under
  another agent's live exclusive reservation, naming the holder, its
  expiry and token. ``BEADHUB_GUARD_OVERRIDE=<reason>`` commits anyway,
  and the override is recorded on the hub (``guard.override``).
- ``beadhub guard pretooluse`` reads the hook's JSON on stdin: Claude
  Code's (``tool_name`` Edit/Write/..., ``tool_input.file_path``, ``cwd``)
  or Codex's (``tool_name`` ``apply_patch``, ``tool_input.command`` the
  patch, whose ``*** Add/Update/Delete File:`` and ``*** Move to:``
  headers name the files; openai/codex, codex-rs/core/src/tools/handlers/
  apply_patch.rs ``pre_tool_use_payload``). For a file another agent
  holds it answers ``{"hookSpecificOutput": {"hookEventName":
  "PreToolUse", "permissionDecision": "deny", "permissionDecisionReason":
  ...}}`` with exit 0, which both clients take as a refusal before the
  edit happens.

Both ask the hub (``POST /v1/reservations/check``) with a short timeout;
when the hub cannot be reached they warn and let the work go on.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

CONFIG_FILE = "beadhub-guard.json"
TIMEOUT_SECONDS = 3.0
#: Claude Code's tools that write files, and where their input names the file.
EDIT_TOOLS = {"Edit": "file_path", "Write": "file_path", "MultiEdit": "file_path",
              "NotebookEdit": "notebook_path"}  # fmt: skip
MATCHER = "|".join(EDIT_TOOLS)
#: Codex's file-editing tool: its hook input is the patch (``command``).
CODEX_EDIT_TOOL = "apply_patch"
#: The patch lines that name a file the patch writes (Codex's grammar).
PATCH_HEADERS = ("*** Add File: ", "*** Update File: ", "*** Delete File: ", "*** Move to: ")
#: Seconds Codex gives the hook (its default is 600; the hub check takes 3 at most).
CODEX_HOOK_TIMEOUT = 10
HOOK_MARK = "# beadhub guard"
CHECK_BATCH = 500


class HubDown(Exception):
    """The hub could not be asked; the guard lets the work go on."""


@dataclass(frozen=True, slots=True)
class Config:
    url: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass(frozen=True, slots=True)
class Refusal:
    path: str
    holder: dict[str, Any]

    def describe(self) -> str:
        h = self.holder
        held = f" ({h['path']})" if h["path"] != self.path else ""
        return (
            f"{self.path}{held} is reserved by {h['holder_alias']} until {h['expires_at']}"
            f" (token {h['token']})"
        )


# -- git ------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


def git_dir(cwd: Path) -> Path:
    return Path(_git(cwd, "rev-parse", "--absolute-git-dir").strip())


def work_tree(cwd: Path) -> Path:
    return Path(_git(cwd, "rev-parse", "--show-toplevel").strip())


def staged_paths(cwd: Path) -> list[str]:
    out = _git(cwd, "diff", "--cached", "--name-only", "-z", "--no-renames")
    return [p for p in out.split("\0") if p]


# -- the hub ----------------------------------------------------------------------


def load_config(cwd: Path) -> Config | None:
    url, key = os.environ.get("BEADHUB_URL"), os.environ.get("BEADHUB_API_KEY")
    if not (url and key):
        try:
            saved = json.loads((git_dir(cwd) / CONFIG_FILE).read_text())
        except (OSError, ValueError, subprocess.CalledProcessError):
            saved = {}
        url, key = url or saved.get("url"), key or saved.get("api_key")
    return Config(url.rstrip("/"), key) if url and key else None


def _post(config: Config, path: str, body: dict[str, Any]) -> Any:
    try:
        response = httpx.post(
            config.url + path, json=body, headers=config.headers, timeout=TIMEOUT_SECONDS
        )
    except httpx.HTTPError as exc:
        raise HubDown(f"the hub at {config.url} is unreachable ({exc})") from None
    if response.status_code != 200:
        raise HubDown(f"the hub answered {response.status_code}: {response.text[:200]}")
    return response.json()


def refusals(config: Config, paths: list[str]) -> list[Refusal]:
    """The paths another agent holds exclusively."""
    found = []
    for start in range(0, len(paths), CHECK_BATCH):
        answer = _post(
            config, "/v1/reservations/check", {"paths": paths[start : start + CHECK_BATCH]}
        )
        for entry in answer["paths"]:
            holder = entry["exclusive_holder"]
            if holder is not None and not holder["mine"]:
                found.append(Refusal(entry["path"], holder))
    return found


def record_override(config: Config, found: list[Refusal], reason: str, via: str) -> None:
    body = {
        "paths": [r.path for r in found],
        "holders": sorted({r.holder["holder_alias"] for r in found}),
        "reason": reason[:500],
        "via": via,
    }
    _post(config, "/v1/guard/override", body)


def _warn(message: str) -> None:
    print(f"beadhub guard: {message}; not checked, going on", file=sys.stderr)


# -- pre-commit -------------------------------------------------------------------------


def pre_commit(cwd: Path) -> int:
    """The git hook: 1 refuses the commit."""
    paths = staged_paths(cwd)
    if not paths:
        return 0
    config = load_config(cwd)
    if config is None:
        _warn("no hub configured (beadhub guard install, or BEADHUB_URL and BEADHUB_API_KEY)")
        return 0
    try:
        found = refusals(config, paths)
    except HubDown as exc:
        _warn(str(exc))
        return 0
    if not found:
        return 0
    override = os.environ.get("BEADHUB_GUARD_OVERRIDE", "").strip()
    if override:
        try:
            record_override(config, found, override, "pre-commit")
        except HubDown as exc:
            _warn(f"the override could not be recorded: {exc}")
        print(f"beadhub guard: override ({override}) recorded:", file=sys.stderr)
        for refusal in found:
            print(f"  {refusal.describe()}", file=sys.stderr)
        return 0
    print("beadhub guard: commit refused, it touches files another agent holds:", file=sys.stderr)
    for refusal in found:
        print(f"  {refusal.describe()}", file=sys.stderr)
    print(
        "Ask the holder to release them (or wait in line for them), or commit with\n"
        "BEADHUB_GUARD_OVERRIDE=<reason> git commit ...  (the override is recorded on the hub).",
        file=sys.stderr,
    )
    return 1


# -- PreToolUse -----------------------------------------------------------------------------


def patch_paths(patch: str) -> list[str]:
    """The files a Codex ``apply_patch`` patch writes, in order, once each."""
    found = []
    for line in patch.splitlines():
        for header in PATCH_HEADERS:
            if line.startswith(header) and line[len(header) :].strip():
                found.append(line[len(header) :].strip())
    return list(dict.fromkeys(found))


def edit_targets(event: dict[str, Any]) -> list[str]:
    """The files a PreToolUse event's tool is about to write (as given:
    absolute, or relative to the event's ``cwd``); none for other tools."""
    tool, tool_input = str(event.get("tool_name")), event.get("tool_input")
    if not isinstance(tool_input, dict):
        return []
    if tool == CODEX_EDIT_TOOL:
        patch = tool_input.get("command")
        return patch_paths(patch) if isinstance(patch, str) else []
    field = EDIT_TOOLS.get(tool)
    target = (tool_input.get(field) or tool_input.get("path")) if field else None
    return [target] if isinstance(target, str) and target else []


def _in_tree(cwd: Path, top: Path, target: str) -> str | None:
    try:
        return (cwd / target).resolve().relative_to(top.resolve()).as_posix()
    except (ValueError, OSError):
        return None  # not a file of this work tree: not the hub's business


def pre_tool_use(hook_input: str) -> dict[str, Any] | None:
    """The hook's answer (printed as JSON), or None: no objection."""
    try:
        event = json.loads(hook_input)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    targets = edit_targets(event)
    if not targets:
        return None
    cwd = Path(str(event.get("cwd") or os.getcwd()))
    try:
        top = work_tree(cwd if cwd.is_dir() else Path.cwd())
        config = load_config(top)
    except (OSError, subprocess.SubprocessError):
        return None  # not in a git work tree
    relative = [r for r in (_in_tree(cwd, top, t) for t in targets) if r is not None]
    if config is None or not relative:
        return None
    try:
        found = refusals(config, relative)
    except HubDown as exc:
        return {"systemMessage": f"beadhub guard: {exc}; the edit goes on unchecked"}
    if not found:
        return None
    reason = (
        f"beadhub guard: {'; '.join(r.describe() for r in found)}. Do not edit it now: ask "
        "the holder, or wait for it (reservations.acquire with wait) and edit once it is yours."
    )
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": reason,
        }
    }


# -- install --------------------------------------------------------------------------------


def _hook_script(previous: Path | None) -> str:
    lines = ["#!/bin/sh", f"{HOOK_MARK} (beadhub guard install)"]
    if previous is not None:
        lines.append(f'"$(dirname "$0")/{previous.name}" "$@" || exit $?')
    lines.append(f'exec "{sys.executable}" -m hub.cli guard pre-commit')
    return "\n".join(lines) + "\n"


def install(
    cwd: Path, url: str, api_key: str, *, claude: bool = True, codex: bool = False
) -> list[Path]:
    """Write the hooks and the config; return what was written."""
    gdir, top = git_dir(cwd), work_tree(cwd)
    written = []
    config = gdir / CONFIG_FILE
    config.write_text(json.dumps({"url": url.rstrip("/"), "api_key": api_key}) + "\n")
    config.chmod(0o600)
    written.append(config)
    hooks = gdir / "hooks"
    hooks.mkdir(exist_ok=True)
    hook = hooks / "pre-commit"
    previous = None
    if hook.exists() and HOOK_MARK not in hook.read_text(errors="replace"):
        previous = hooks / "pre-commit.beadhub-previous"
        hook.rename(previous)
    elif (hooks / "pre-commit.beadhub-previous").exists():
        previous = hooks / "pre-commit.beadhub-previous"
    hook.write_text(_hook_script(previous))
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    written.append(hook)
    command = f'"{sys.executable}" -m hub.cli guard pretooluse'
    if claude:
        # The local settings, not committed: they name this machine's interpreter.
        path = top / ".claude" / "settings.local.json"
        written.append(_add_pretooluse(path, MATCHER, {"type": "command", "command": command}))
    if codex:
        # Codex has no local variant: the project layer's hooks.json, which
        # Codex loads once the project is trusted (and, in releases with
        # hook review, once the hook is trusted in /hooks).
        handler = {"type": "command", "command": command, "timeout": CODEX_HOOK_TIMEOUT}
        path = top / ".codex" / "hooks.json"
        written.append(_add_pretooluse(path, CODEX_EDIT_TOOL, handler))
    return written


def _add_pretooluse(path: Path, matcher: str, handler: dict[str, Any]) -> Path:
    """Put the guard's PreToolUse entry into a hooks file of Claude Code's
    shape (Codex's hooks.json has the same), keeping every other hook and
    replacing an earlier guard entry."""
    path.parent.mkdir(exist_ok=True)
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError):
        settings = {}
    entries = settings.setdefault("hooks", {}).setdefault("PreToolUse", [])
    entries[:] = [e for e in entries if "guard pretooluse" not in json.dumps(e)]
    entries.append({"matcher": matcher, "hooks": [handler]})
    path.write_text(json.dumps(settings, indent=2) + "\n")
    return path


def main(args: Any) -> int:
    """``beadhub guard <action>`` (see hub.cli)."""
    cwd = Path.cwd()
    if args.action == "install":
        url = args.url or os.environ.get("BEADHUB_URL")
        key = args.api_key or os.environ.get("BEADHUB_API_KEY")
        if not (url and key):
            print("beadhub guard install needs --url and --api-key (or BEADHUB_URL, "
                  "BEADHUB_API_KEY)", file=sys.stderr)  # fmt: skip
            return 2
        for path in install(cwd, url, key, claude=not args.no_claude, codex=args.codex):
            print(f"wrote {path}")
        return 0
    if args.action == "pre-commit":
        return pre_commit(cwd)
    answer = pre_tool_use(sys.stdin.read())
    if answer is not None:
        print(json.dumps(answer))
    return 0
