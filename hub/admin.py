"""``beadhub signin | requests | admit | refuse | invite | keys | grant |
join-policy | audit``: a human's actions from the hub's host.

Each command reads the operator token ``beadhub serve`` wrote to its data
directory (being able to read it is what "on the hub host" means), signs
in to the project as a human over HTTP, makes its call and signs out. So
the CLI goes through the same routes, services and audit trail as the
dashboard.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx

from hub.services import signin

COMMANDS = (
    "signin",
    "requests",
    "admit",
    "refuse",
    "invite",
    "keys",
    "grant",
    "join-policy",
    "audit",
)


def add_commands(sub: Any) -> None:
    def command(name: str, help_: str) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = sub.add_parser(name, help=help_)
        cmd.add_argument("--url", default="http://127.0.0.1:8000", help="the hub's base URL")
        cmd.add_argument(
            "--data-dir", default=".beadhub", help="the hub's data directory (operator token)"
        )
        cmd.add_argument("--project", required=True, help="the project's slug")
        cmd.add_argument("--human", default="operator", help="your name, for the audit trail")
        return cmd

    command("signin", "print a one-time dashboard sign-in link for a human")
    command("requests", "list agents waiting to join")
    command("admit", "admit a waiting agent").add_argument("request_id")
    command("refuse", "refuse a waiting agent").add_argument("request_id")
    command("invite", "print an invitation token (an init carrying it joins)").add_argument(
        "--uses", type=int, default=1
    )
    keys = command("keys", "list, rotate or revoke api keys")
    keys.add_argument("action", choices=["list", "rotate", "revoke"])
    keys.add_argument("target", nargs="?", help="agent id (rotate) or key id (revoke)")
    grant = command("grant", "grant an agent the coordinator role (or take it back: none)")
    grant.add_argument("agent_id")
    grant.add_argument("role", choices=["coordinator", "none"])
    command("join-policy", "show or set the join policy").add_argument(
        "policy", nargs="?", choices=["open", "approval", "default"]
    )
    command("audit", "the audit trail of human actions")


def _fail(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise SystemExit(f"beadhub: the hub answered {response.status_code}: {response.text}")


def run(args: argparse.Namespace) -> None:
    token = signin.read_token_file(Path(args.data_dir))
    with httpx.Client(base_url=args.url, timeout=30) as http:
        if args.command == "signin":
            response = http.post(
                "/v1/auth/links",
                json={"human_name": args.human, "project_slug": args.project},
                headers={"Authorization": f"Bearer {token}"},
            )
            _fail(response)
            link = response.json()
            print(f"one-time sign-in link for {link['human_name']} (until {link['expires_at']}):")
            print(link["url"])
            return
        response = http.post(
            "/v1/auth/signin",
            json={"token": token, "project_slug": args.project, "human_name": args.human},
        )
        _fail(response)
        ticket = response.json()["ticket"]
        headers = {"Authorization": f"Bearer {ticket}"}
        try:
            _fail(answer := _call(http, args, headers))
            print(json.dumps(answer.json(), indent=2))
        finally:
            http.post("/v1/auth/ticket/revoke", json={"ticket": ticket})


def _call(http: httpx.Client, args: argparse.Namespace, headers: dict[str, str]) -> httpx.Response:
    name = args.command
    if name == "requests":
        return http.get("/v1/join-requests", headers=headers)
    if name in ("admit", "refuse"):
        return http.post(f"/v1/join-requests/{args.request_id}/{name}", headers=headers)
    if name == "invite":
        return http.post("/v1/invitations", json={"uses": args.uses}, headers=headers)
    if name == "grant":
        role = None if args.role == "none" else args.role
        return http.post(f"/v1/agents/{args.agent_id}/grant", json={"role": role}, headers=headers)
    if name == "join-policy":
        if args.policy is None:
            return http.get("/v1/join-policy", headers=headers)
        policy = None if args.policy == "default" else args.policy
        return http.post("/v1/join-policy", json={"join_policy": policy}, headers=headers)
    if name == "audit":
        return http.get("/v1/audit", headers=headers)
    if args.action == "list":
        return http.get("/v1/keys", headers=headers)
    if not args.target:
        raise SystemExit(f"beadhub keys {args.action}: give the agent id or key id")
    if args.action == "rotate":
        return http.post("/v1/keys/rotate", json={"agent_id": args.target}, headers=headers)
    return http.post(f"/v1/keys/{args.target}/revoke", headers=headers)
