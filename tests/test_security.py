"""The security test module, generated from the HTTP route registry
(hub/transport/http/registry.py) and the JSON-RPC method catalogue
(protocol/methods): a route or method added later is covered without anyone
remembering to.

Every route and method is called, aimed at a victim project's ids, by:

- ``other_agent``: another project's agent key,
- ``other_human``: another project's human,
- ``agent_for_human``: the victim project's own agent, where a human is
  required (routes declared ``human=True``, methods in ``HUMAN_ONLY``),
- ``revoked``: a key its human revoked,
- ``deleted``: the key of an agent a human deleted,
- ``no_key``: no credential at all,

and must refuse without revealing or changing anything: no answer carries
any of the victim's names, subjects or paths that the caller did not send
itself, and a digest of every row of the victim project (every table with a
``project_id``, the project's own row) is the same after the call.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import UnionType
from typing import Any, Union, get_args, get_origin

import httpx
import orjson
import pytest
from pydantic import BaseModel

from hub.transport.http import api
from hub.transport.http.registry import Operation
from protocol.client import HubClient
from protocol.errors import ErrorCode, RpcError
from protocol.methods import CATALOGUE, HUMAN_ONLY
from tests.support import RunningHub, onboard, sign_in_human, unique

CALLERS = ("other_agent", "other_human", "agent_for_human", "revoked", "deleted", "no_key")
#: Callers whose credential the hub must refuse outright.
REFUSED = ("revoked", "deleted", "no_key")


class Victim:
    """A project with something of everything, and the callers aimed at it."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.slug = unique("victim")
        self.alias = f"valice{tag}"
        self.peer = f"vbob{tag}"
        self.human_name = f"VHuman{tag}"
        self.subject = f"vsubject-{tag}"
        self.secret = f"vprivate-{tag}"
        self.path = f"vsecret/{tag}.py"
        self.bead = f"vbd-{tag}"
        #: Never sent by an attacking call (the others are, as targets).
        self.hidden_path = f"vhidden/{tag}.py"
        self.hidden_bead = f"vhid-{tag}"
        self.origin = f"git@github.com:victim/{tag}.git"
        self.ids: dict[str, Any] = {}
        self.sessions: list[HubClient] = []
        self.credentials: dict[str, dict[str, str]] = {}

    @property
    def markers(self) -> list[str]:
        """What only a reader of the victim project could know."""
        return [self.human_name, self.subject, self.secret, self.hidden_path, self.hidden_bead]


async def _build(server: RunningHub) -> Victim:
    v = Victim()
    url = server.http_url
    alice = await onboard(url, v.slug, v.alias, human_name=v.human_name, repo_origin=v.origin)
    bob = await onboard(url, v.slug, v.peer, repo_origin=v.origin)
    revoked = await onboard(url, v.slug, f"vrev{v.alias}", repo_origin=v.origin)
    gone = await onboard(url, v.slug, f"vgone{v.alias}", repo_origin=v.origin)
    human = await sign_in_human(server, v.slug, v.human_name)
    as_human = {"Authorization": f"Bearer {human['ticket']}"}

    # The victims stay connected while they are attacked: an agent that
    # left would lose its reservations and claims to the lease sweeper
    # (hub.services.leases), a change that is nobody's call.
    a = await HubClient(server.ws_url, alice["api_key"]).connect()
    b = await HubClient(server.ws_url, bob["api_key"]).connect()
    v.sessions = [a, b]
    mail = await a.call("mail.send", to=[v.peer], subject=v.subject, body=v.secret)
    chat = await a.call("chat.send", to=[v.peer], body=v.secret)
    escalation = await a.call("escalations.create", subject=v.subject, situation=v.secret)
    issues = [
        {"id": v.bead, "title": v.subject, "status": "open"},
        {"id": v.hidden_bead, "title": v.secret, "status": "open"},
    ]
    jsonl = "\n".join(orjson.dumps(i).decode() for i in issues)
    await a.call("beads.sync", mode="full", issues_jsonl=jsonl)
    await a.call("claims.claim", bead_id=v.bead)
    await a.call(
        "reservations.acquire", paths=[v.path, v.hidden_path], reason=v.secret, ttl_seconds=3600
    )
    keys = (await a.call("keys.list"))["keys"]

    async with httpx.AsyncClient(base_url=url, timeout=10, headers=as_human) as http:
        # A join request waiting for a human.
        (await http.post("/v1/join-policy", json={"join_policy": "approval"})).raise_for_status()
        pending = await http.post(
            "/v1/init",
            json={"project_slug": v.slug, "alias": f"vpend{v.alias}"},
            headers={"Authorization": ""},
        )
        assert "pending_validation" in pending.text, pending.text
        request_id = pending.json()["data"]["request_id"]
        revoked_key = (await http.get("/v1/keys", params={"agent_id": revoked["agent_id"]})).json()
        key_id = revoked_key["keys"][0]["key_id"]
        (await http.post(f"/v1/keys/{key_id}/revoke")).raise_for_status()
        (await http.delete(f"/v1/workspaces/{gone['agent_id']}")).raise_for_status()

    attacker_slug = unique("attacker")
    mallory = await onboard(url, attacker_slug, "mallory")
    their_human = await sign_in_human(server, attacker_slug, "mallory-human")

    v.ids = {
        "project_id": alice["project_id"],
        "agent_id": alice["agent_id"],
        "peer_id": bob["agent_id"],
        "message_id": mail["message_id"],
        "session_id": chat["session_id"],
        "escalation_id": escalation["escalation_id"],
        "key_id": keys[0]["key_id"],
        "request_id": request_id,
    }
    v.credentials = {
        "other_agent": {"Authorization": f"Bearer {mallory['api_key']}"},
        "other_human": {"Authorization": f"Bearer {their_human['ticket']}"},
        "agent_for_human": {"Authorization": f"Bearer {alice['api_key']}"},
        "revoked": {"Authorization": f"Bearer {revoked['api_key']}"},
        "deleted": {"Authorization": f"Bearer {gone['api_key']}"},
        "no_key": {},
    }
    return v


@pytest.fixture(scope="module")
async def victim(hub_server: RunningHub) -> AsyncIterator[Victim]:
    built = await _build(hub_server)
    yield built
    for session in built.sessions:
        await session.close()


# -- what a caller sends: the victim's ids wherever a field names one ------------------


def _values(v: Victim) -> dict[str, Any]:
    ids = v.ids
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat().replace("+00:00", "Z")
    return {
        "workspace_id": ids["agent_id"],
        "agent_id": ids["peer_id"],
        "from_workspace": ids["agent_id"],
        "to_workspace": ids["peer_id"],
        "to_agent_id": ids["peer_id"],
        "project_id": ids["project_id"],
        "message_id": ids["message_id"],
        "up_to_message_id": ids["message_id"],
        "thread_id": ids["message_id"],
        "message_ids": [ids["message_id"]],
        "session_id": ids["session_id"],
        "escalation_id": ids["escalation_id"],
        "key_id": ids["key_id"],
        "request_id": ids["request_id"],
        "bead_id": v.bead,
        "paths": [v.path],
        "resource_key": v.path,
        "to": [v.peer],
        "to_aliases": [v.peer],
        "to_alias": v.peer,
        "slug": v.slug,
        "project_slug": v.slug,
        "origin_url": v.origin,
        "repo_origin": v.origin,
        "alias": v.alias,
        "deadline": soon,
        "command_line": f"bd update {v.bead} --status in_progress",
        "mode": "incremental",
        "body": "attack",
        "message": "attack",
        "subject": "attack",
        "situation": "attack",
        "response": "attack",
        "human_name": "attacker",
        "api_key": "bh_notakey",
        "ticket": "bht_notaticket",
        "token": "bhl_notalink",
        "events": None,
        "cursor": 0,
        "version": 1,
        "invariants": [{"id": "attack", "title": "attack", "body_md": "attack"}],
        "roles": {},
        "role": "coordinator",
        "join_policy": "open",
        "up_to": ids["message_id"],
        "url": "http://127.0.0.1:9/hook",
    }


def _sample(annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return _sample(next(a for a in get_args(annotation) if a is not type(None)))
    if origin in (list, tuple):
        return []
    if origin is dict:
        return {}
    args = [a for a in get_args(annotation) if a is not type(None)]
    if origin is not None and args and not isinstance(args[0], type):
        return args[0]  # a Literal
    if annotation is bool:
        return False
    if annotation is int:
        return 1
    if annotation is float:
        return 1.0
    return "x"


def params_for(model: type[BaseModel], v: Victim) -> dict[str, Any]:
    """Every field that names something of the victim's, and a plain value
    for each other required one."""
    values = _values(v)
    params: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if name in values:
            value = values[name]
            annotation = field.annotation
            if get_origin(annotation) in (Union, UnionType):
                annotation = next(a for a in get_args(annotation) if a is not type(None))
            if isinstance(value, list) and get_origin(annotation) not in (list, tuple):
                value = value[0]  # one alias where others take a list (claims.reassign)
            params[name] = value
        elif field.is_required():
            params[name] = _sample(field.annotation)
    if "session_id" in params and "to" in params:
        del params["to"]  # chat.send takes one or the other: aim at the conversation
    return params


def _path(op: Operation, v: Victim) -> str:
    values = {**_values(v), "agent_id": v.ids["peer_id"]}
    path = op.path
    for name in ("project_id", "workspace_id", "session_id", "message_id"):
        path = path.replace("{" + name + "}", str(values[name]))
    for name in ("request_id", "key_id", "agent_id"):
        path = path.replace("{" + name + "}", str(values[name]))
    return path


# -- what the victim project holds ---------------------------------------------------------

_TABLES = """
SELECT table_name FROM information_schema.columns
WHERE column_name = 'project_id' AND table_schema = current_schema()
ORDER BY table_name
"""


#: The victim's own session (``agent_for_human``) moves its presence: that
#: is its own doing, not the call's.
_ROW = {
    "agents": "(x.id, x.alias, x.human_name, x.role, x.granted_role, x.hostname, "
    "x.workspace_path, x.repo_id, x.deleted_at, x.focus)"
}
_SKIP = {"events": "AND type <> 'presence'"}
#: Delivery states are written a moment after a session takes a mail
#: (hub.services.delivery): the victims' own doing, not the call's.
_ROW["mail_deliveries"] = "(x.message_id, x.recipient_id, x.read_at)"
_digest_sql: str | None = None


async def snapshot(server: RunningHub, v: Victim) -> list[Any]:
    """One digest per table of everything the victim project holds."""
    global _digest_sql
    store = server.hub.store
    if _digest_sql is None:
        tables = [r["table_name"] for r in await store.fetch(_TABLES)]
        parts = [
            f"SELECT '{t}' AS t, md5(coalesce(string_agg({_ROW.get(t, 'x')}::text, '|' "
            f"ORDER BY {_ROW.get(t, 'x')}::text), '')) AS d FROM {t} x "
            f"WHERE project_id = $1 {_SKIP.get(t, '')}"
            for t in tables
        ]
        parts.append("SELECT 'projects', md5(x::text) FROM projects x WHERE id = $1")
        # Readable beside the digest: which events a change added.
        parts.append(
            "SELECT 'event types', string_agg(type, ',' ORDER BY seq) FROM events"
            f" WHERE project_id = $1 {_SKIP['events']}"
        )
        _digest_sql = " UNION ALL ".join(parts)
    return [tuple(r) for r in await store.fetch(_digest_sql, v.ids["project_id"])]


def revealed(answer: str, sent: str, v: Victim) -> list[str]:
    return [m for m in v.markers if m in answer and m not in sent]


# -- the generated cases ---------------------------------------------------------------------


def _http_cases() -> list[Any]:
    cases = []
    for op in api.operations:
        for caller in CALLERS:
            if caller == "agent_for_human" and not op.human:
                continue
            cases.append(pytest.param(op, caller, id=f"{op.method} {op.path} [{caller}]"))
    return cases


def _rpc_cases() -> list[Any]:
    cases = []
    for name in CATALOGUE:
        for caller in CALLERS:
            if caller == "agent_for_human" and name not in HUMAN_ONLY:
                continue
            cases.append(pytest.param(name, caller, id=f"{name} [{caller}]"))
    return cases


@pytest.mark.parametrize(("op", "caller"), _http_cases())
async def test_every_route_refuses_the_wrong_caller(
    hub_server: RunningHub, victim: Victim, op: Operation, caller: str
):
    before = await snapshot(hub_server, victim)
    headers = dict(victim.credentials[caller])
    body = params_for(op.bodies[0], victim) if op.bodies else None
    query = params_for(op.query, victim) if op.query else None
    async with httpx.AsyncClient(base_url=hub_server.http_url, timeout=10) as http:
        response = await http.request(
            op.method, _path(op, victim), json=body, params=query, headers=headers
        )
    sent = orjson.dumps([_path(op, victim), body, query]).decode()
    assert response.status_code < 500, response.text
    if caller in REFUSED and op.auth:
        assert response.status_code == 401, response.text
    if caller == "agent_for_human":
        assert response.status_code == 403, response.text
    if caller in ("other_agent", "other_human") and op.auth:
        # Their credential still works: the refusal is about the target.
        assert response.status_code != 401, response.text
    assert not revealed(response.text, sent, victim), response.text
    assert await snapshot(hub_server, victim) == before


@pytest.mark.parametrize(("name", "caller"), _rpc_cases())
async def test_every_method_refuses_the_wrong_caller(
    hub_server: RunningHub, victim: Victim, name: str, caller: str
):
    before = await snapshot(hub_server, victim)
    token = victim.credentials[caller].get("Authorization", "").removeprefix("Bearer ")
    params = params_for(CATALOGUE[name], victim)
    sent = orjson.dumps(params).decode()
    if caller in REFUSED:
        with pytest.raises(RpcError) as refused:
            await HubClient(hub_server.ws_url, token or None, reconnect=False).connect()
        assert refused.value.code == ErrorCode.UNAUTHORIZED
        assert await snapshot(hub_server, victim) == before
        return
    async with HubClient(hub_server.ws_url, token, reconnect=False) as client:
        try:
            answer = orjson.dumps(await client.call(name, **params)).decode()
            assert caller != "agent_for_human", f"{name} answered an agent: {answer}"
        except RpcError as exc:
            assert exc.code != ErrorCode.INTERNAL_ERROR, exc.message
            if caller == "agent_for_human":
                assert exc.code == ErrorCode.FORBIDDEN, exc.message
            answer = orjson.dumps([exc.message, exc.data]).decode()
    assert not revealed(answer, sent, victim), answer
    assert await snapshot(hub_server, victim) == before


def test_every_route_and_method_is_covered():
    """The cases come from the registry and the catalogue themselves; this
    says so in numbers, and that human-only methods exist in the catalogue."""
    assert len(_http_cases()) >= len(api.operations) * 5
    assert len(_rpc_cases()) >= len(CATALOGUE) * 5
    assert set(CATALOGUE) >= HUMAN_ONLY


async def test_the_samples_reach_the_services(victim: Victim):
    """A case whose params do not even validate proves nothing about
    authority: the generated params must parse for every method and body."""
    from hub.transport.rpc import parse_params

    for model in CATALOGUE.values():
        parse_params(model, params_for(model, victim))
    for op in api.operations:
        if op.bodies:
            parse_params(op.bodies[0], params_for(op.bodies[0], victim))
