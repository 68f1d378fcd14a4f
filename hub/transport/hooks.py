"""``beadhub hook <event>``: what Claude Code / Codex hooks hand the model.

The client runs the command with the hook's JSON on stdin (``session_id``,
``transcript_path``, ``cwd``, ``hook_event_name``, and per event ``source``,
``prompt``, ``tool_name``, ``stop_hook_active``, ...) and reads JSON from
stdout:

- ``SessionStart``, ``UserPromptSubmit``, ``PostToolUse``: what is new for
  the agent (``news.get`` on the hub: mail, chats, answers to its
  escalations, others' reservations on the files it is changing) as
  ``hookSpecificOutput.additionalContext``; the mail and answers shown
  are recorded as *shown* (the sender sees it in ``mail.receipts``).
  Nothing new: ``{}``.
- ``Stop``: if someone is waiting on the agent in chat, ``{"decision":
  "block", "reason": ...}`` keeps it going with the message; not when the
  agent already continued because of a Stop hook (``stop_hook_active``).

A hook never breaks the agent's session: without a configuration or a
reachable hub it answers ``{}`` (and says why on stderr), exit status 0.
The hub is reached over plain HTTP (``POST /v1/news``) with the standard
library, so the command starts fast.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson

from hub.transport.mcp import config

EVENTS = ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop")
#: Seconds for the hub to answer; the client's own hook timeout is longer.
TIMEOUT = 5.0
MAX_FILES = 1000


def _mail_lines(news: dict[str, Any]) -> list[str]:
    lines = []
    for m in news["mail"]:
        subject = f" \u2014 {m['subject']}" if m["subject"] else ""
        urgent = f" [{m['priority']}]" if m["priority"] in ("high", "urgent") else ""
        lines.append(
            f"- Mail from {m['from_alias']}{urgent}{subject} (message_id {m['message_id']}):\n"
            f"  {m['body']}"
        )
    return lines


def _chat_lines(news: dict[str, Any]) -> list[str]:
    lines = []
    for c in news["chats"]:
        who = c["last_from"] or ", ".join(c["participants"])
        if c.get("sender_waiting"):
            head = f"- {who} is WAITING for your reply in chat"
        else:
            head = f"- Chat from {who}"
        lines.append(
            f"{head} (session_id {c['session_id']}, {c['unread_count']} unread):\n"
            f"  {c['last_message']}\n  Answer with the chat_reply tool."
        )
    return lines


def context_text(news: dict[str, Any]) -> str:
    """The additionalContext for what is new; "" when nothing is."""
    lines = [*_mail_lines(news), *_chat_lines(news)]
    for a in news["answers"]:
        lines.append(
            f"- {a['responded_by']} answered your escalation \u201c{a['subject']}\u201d:\n"
            f"  {a['response']}"
        )
    for c in news["conflicts"]:
        lines.append(
            f"- You are changing {c['path']}, but {c['held_by']} has reserved "
            f"{c['held_path']}"
            + (f" ({c['reason']})" if c["reason"] else "")
            + ": coordinate before you go on (chat_send)."
        )
    if not lines:
        return ""
    return "BeadHub \u2014 new for you from your team:\n" + "\n".join(lines)


def stop_reason(news: dict[str, Any]) -> str:
    waiting = news["waiting_on_me"]
    if not waiting:
        return ""
    lines = [
        f"{c['last_from']} is waiting for your reply in chat (session_id {c['session_id']}): "
        f"{c['last_message']}"
        for c in waiting
    ]
    return "\n".join(lines) + "\nReply with the chat_reply tool before you stop."


def answer(event: str, payload: dict[str, Any], news: dict[str, Any]) -> dict[str, Any]:
    """The hook's JSON answer for what the hub said is new."""
    if event == "Stop":
        if payload.get("stop_hook_active"):
            return {}
        reason = stop_reason(news)
        return {"decision": "block", "reason": reason} if reason else {}
    text = context_text(news)
    if not text:
        return {}
    return {"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}}


def working_files(cwd: Path, payload: dict[str, Any]) -> list[str]:
    """The files the agent works on, relative to the repo: the worktree's
    changes (``git status``) and the file the tool just wrote."""
    root = config.git_root(cwd) or cwd
    files: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "-uall", "--no-renames"],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
        files = [line[3:] for line in status.stdout.splitlines() if len(line) > 3]
    edited = (payload.get("tool_input") or {}).get("file_path")
    if isinstance(edited, str) and edited:
        with contextlib.suppress(ValueError):
            files.append(str((cwd / edited).resolve().relative_to(root.resolve())))
    return list(dict.fromkeys(files))[:MAX_FILES]


def fetch_news(found: config.Found, mark_shown: bool, working: list[str]) -> dict[str, Any]:
    url = found.url.rstrip("/") + "/v1/news"
    body = {"mark_shown": mark_shown, "working": working}
    news: dict[str, Any] = config.post_json(url, body, found.api_key, timeout=TIMEOUT)
    return news


def run(event: str, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    try:
        payload = orjson.loads(stdin.read() or "{}")
    except orjson.JSONDecodeError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    event = payload.get("hook_event_name") or event
    out: dict[str, Any] = {}
    try:
        cwd = Path(payload["cwd"]) if payload.get("cwd") else Path.cwd()
        found = config.find(cwd)
        working = working_files(cwd, payload) if event != "Stop" else []
        news = fetch_news(found, mark_shown=event != "Stop", working=working)
        out = answer(event, payload, news)
    except config.NotConfigured as exc:
        print(f"beadhub hook: {exc}", file=sys.stderr)
    except Exception as exc:
        print(f"beadhub hook: the hub did not answer: {exc}", file=sys.stderr)
    stdout.write(orjson.dumps(out).decode() + "\n")
    stdout.flush()
    return 0
