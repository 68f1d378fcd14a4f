"""The ``beadhub mcp`` and ``beadhub hook`` command lines."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hub.transport.mcp import config


def add_parsers(sub: argparse._SubParsersAction) -> None:
    mcp = sub.add_parser("mcp", help="the stdio MCP server for a coding agent's session")
    actions = mcp.add_subparsers(dest="mcp_command")
    init = actions.add_parser("init", help="create this worktree's agent on a hub (as bdh :init)")
    init.add_argument("--url", default=os.environ.get("BEADHUB_URL", config.DEFAULT_URL))
    init.add_argument("--project", default=os.environ.get("BEADHUB_PROJECT"), required=False)
    init.add_argument("--alias")
    init.add_argument("--role", default="")
    init.add_argument("--human-name", default="")
    install = actions.add_parser("install", help="write the MCP and hook configuration")
    install.add_argument("--claude", action="store_true", help=".mcp.json, .claude/settings.json")
    install.add_argument("--codex", action="store_true", help=".codex/config.toml, hooks.json")
    install.add_argument("--dir", default=".", help="the project directory (default: here)")
    hook = sub.add_parser("hook", help="run by Claude Code / Codex hooks: JSON in, JSON out")
    hook.add_argument("event", help="SessionStart, UserPromptSubmit, PostToolUse or Stop")


def run(args: argparse.Namespace) -> int:
    if args.command == "hook":
        from hub.transport import hooks

        return hooks.run(args.event)
    if args.mcp_command == "install":
        from hub.transport.mcp.install import install

        if not (args.claude or args.codex):
            print("beadhub mcp install: say --claude, --codex or both", file=sys.stderr)
            return 2
        for path in install(Path(args.dir), for_claude=args.claude, for_codex=args.codex):
            print(f"wrote {path}")
            print(path.read_text().rstrip())
        return 0
    if args.mcp_command == "init":
        if not args.project:
            print("beadhub mcp init: give --project (or BEADHUB_PROJECT)", file=sys.stderr)
            return 2
        found = config.onboard(
            args.url, args.project, alias=args.alias, role=args.role, human_name=args.human_name
        )
        print(f"joined {args.project} on {found.url} as {found.alias}")
        return 0
    try:
        found = config.find()
    except config.NotConfigured as exc:
        project = os.environ.get("BEADHUB_PROJECT")
        if not project:
            print(f"beadhub mcp: {exc}", file=sys.stderr)
            return 1
        found = config.onboard(os.environ.get("BEADHUB_URL", config.DEFAULT_URL), project)
    from hub.transport.mcp import stdio

    stdio.main(found)
    return 0
