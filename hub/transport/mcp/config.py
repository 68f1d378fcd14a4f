"""Where an agent's hub and key are: what ``beadhub mcp`` and ``beadhub
hook`` read, with no flags.

The same places ``bdh`` uses, in its order:

1. ``BEADHUB_URL`` and ``BEADHUB_API_KEY`` from the environment;
2. the hub URL from the worktree's ``.beadhub`` (YAML written by
   ``bdh :init``: ``beadhub_url``, ``alias``, ...; looked for from the
   working directory up to the git root);
3. the key (and the URL, if still missing) from the aw configuration: the
   worktree's ``.aw/context`` names the account (``default_account``),
   the global file (``AW_CONFIG_PATH``, default ``~/.config/aw/config.yaml``)
   holds ``accounts.<name>.api_key`` and ``servers.<name>.url``.

:func:`onboard` creates the agent on the hub (``POST /v1/init``) and
writes those files the way bdh does, so bdh works in that worktree too.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

DEFAULT_URL = "http://localhost:8000"
BEADHUB_FILE = ".beadhub"
AW_CONTEXT = Path(".aw") / "context"


class NotConfigured(Exception):
    """No key found: the message says how to get one."""


@dataclass(frozen=True, slots=True)
class Found:
    url: str
    api_key: str
    alias: str | None
    #: Where the key came from (for messages).
    source: str


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def git_root(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return None


def beadhub_file(cwd: Path) -> Path | None:
    """bdh's lookup: from ``cwd`` up to the git root (only ``cwd`` outside git)."""
    root = git_root(cwd)
    for directory in (cwd, *cwd.parents):
        candidate = directory / BEADHUB_FILE
        if candidate.is_file():
            return candidate
        if root is None or directory == root:
            break
    return None


def _aw_context(cwd: Path) -> dict[str, Any]:
    for directory in (cwd, *cwd.parents):
        candidate = directory / AW_CONTEXT
        if candidate.is_file():
            return _load_yaml(candidate)
    return {}


def aw_config_path(env: Mapping[str, str]) -> Path:
    explicit = env.get("AW_CONFIG_PATH", "").strip()
    if explicit:
        return Path(explicit)
    return Path(env.get("HOME") or Path.home()) / ".config" / "aw" / "config.yaml"


def find(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Found:
    """The hub and key for the worktree at ``cwd``; NotConfigured if none."""
    env = os.environ if env is None else env
    cwd = (cwd or Path.cwd()).resolve()
    url = env.get("BEADHUB_URL", "").strip()
    key = env.get("BEADHUB_API_KEY", "").strip()
    alias = None
    found_file = beadhub_file(cwd)
    if found_file is not None:
        settings = _load_yaml(found_file)
        url = url or str(settings.get("beadhub_url") or "").strip()
        alias = settings.get("alias") or None
    if url and key:
        return Found(url, key, alias, "environment")
    context = _aw_context(cwd)
    config = _load_yaml(aw_config_path(env))
    accounts = config.get("accounts") or {}
    name = context.get("default_account") or config.get("default_account")
    account = accounts.get(name) if isinstance(accounts, dict) and name else None
    if isinstance(account, dict) and account.get("api_key"):
        servers = config.get("servers") or {}
        server = servers.get(account.get("server")) if isinstance(servers, dict) else None
        server_url = server.get("url") if isinstance(server, dict) else None
        return Found(
            url or server_url or DEFAULT_URL,
            key or str(account["api_key"]),
            alias or account.get("agent_alias"),
            f"aw account {name}",
        )
    if key:
        return Found(url or DEFAULT_URL, key, alias, "environment")
    raise NotConfigured(
        "no BeadHub key for this worktree: run `bdh :init`, or `beadhub mcp init --project "
        "<slug>`, or set BEADHUB_URL and BEADHUB_API_KEY"
    )


# -- onboarding ------------------------------------------------------------------------------


def _git_origin(cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(cwd), "remote", "get-url", "origin"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _account_part(text: str) -> str:
    """bdh's sanitizeAccountKeyComponent."""
    out = re.sub(r"[^a-z0-9_.-]+", "-", text.strip().lower()).strip("-")
    return out or "x"


def _server_name(url: str) -> str:
    """aw's DeriveServerNameFromURL: the URL's host[:port]."""
    from urllib.parse import urlsplit

    return urlsplit(url.strip()).netloc or "localhost"


def post_json(url: str, body: dict[str, Any], key: str | None = None, timeout: float = 10) -> Any:
    """One JSON POST with the standard library (hooks start fast without
    an HTTP client library). HTTP errors raise with the hub's JSON body."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=orjson.dumps(body), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return orjson.loads(response.read() or b"null")


def onboard(
    url: str,
    project: str,
    *,
    cwd: Path | None = None,
    alias: str | None = None,
    role: str = "",
    human_name: str = "",
    env: Mapping[str, str] | None = None,
) -> Found:
    """Create this worktree's agent on the hub and write ``.beadhub``, the
    aw account and ``.aw/context`` as ``bdh :init`` does."""
    env = os.environ if env is None else env
    cwd = (cwd or Path.cwd()).resolve()
    origin = _git_origin(cwd) or f"https://local.invalid/{_account_part(cwd.name)}.git"
    body: dict[str, Any] = {
        "project_slug": project,
        "repo_origin": origin,
        "role": role,
        "human_name": human_name,
        "hostname": socket.gethostname(),
        "workspace_path": str(cwd),
    }
    if alias:
        body["alias"] = alias
    answer = post_json(url.rstrip("/") + "/v1/init", body)
    settings = {
        "workspace_id": answer["agent_id"],
        "beadhub_url": url,
        "project_slug": answer["project_slug"],
        "repo_id": answer.get("repo_id") or "",
        "repo_origin": origin,
        "canonical_origin": answer.get("canonical_origin") or "",
        "alias": answer["alias"],
        "human_name": human_name,
        "role": role,
    }
    (cwd / BEADHUB_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))
    server = _server_name(url)
    account = "acct-" + "__".join(
        _account_part(x) for x in (server, answer["project_slug"], answer["alias"])
    )
    config_path = aw_config_path(env)
    config = _load_yaml(config_path)
    config.setdefault("servers", {})[server] = {"url": url}
    config.setdefault("accounts", {})[account] = {
        "server": server,
        "api_key": answer["api_key"],
        "default_project": answer["project_slug"],
        "agent_id": answer["agent_id"],
        "agent_alias": answer["alias"],
    }
    config.setdefault("default_account", account)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chmod(config_path, 0o600)
    context_path = cwd / AW_CONTEXT
    context = _load_yaml(context_path)
    context["default_account"] = account
    context.setdefault("server_accounts", {})[server] = account
    context_path.parent.mkdir(parents=True, exist_ok=True)
    context_path.write_text(yaml.safe_dump(context, sort_keys=False))
    return Found(url, answer["api_key"], answer["alias"], f"aw account {account}")
