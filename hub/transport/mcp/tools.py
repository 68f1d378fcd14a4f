"""The MCP tools: one definition, served by ``beadhub mcp`` (stdio) and by
``/mcp`` (Streamable HTTP).

A tool is a name, a short description, an arguments model (its JSON Schema
is the tool's input schema) and a function that maps the arguments onto
JSON-RPC methods of the catalogue through a :class:`Caller`: the stdio
server's caller sends them over the agent's WebSocket session, the hub's
calls :func:`hub.transport.rpc.dispatch` in-process. So every rule stays in
hub/services and both endpoints answer alike.

Each tool answers a JSON object (MCP ``structuredContent``) and a one-line
summary (the text content). Refusals come back as tool errors (``isError``)
whose text says what to do next.

Waiting tools (``chat_send``/``chat_reply`` with ``wait``, ``chat_wait``,
``escalate``, ``claim`` and ``reserve`` with ``wait``) report progress while
they wait and stop when the client cancels. A wait is resumable: ``chat_wait`` (or ``escalate``'s
``escalation_id``) picks up a wait that a reconnect or another hub instance
cut off, from the store, without missing a reply.

This module imports no service code: the stdio server runs in the coding
agent's process and must start fast.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol.errors import ErrorCode, RpcError

#: How often a waiting tool reports progress.
PROGRESS_SECONDS = 5.0
#: The longest wait a tool accepts (the hub may allow less).
MAX_WAIT_SECONDS = 600


class Caller(Protocol):
    """Runs JSON-RPC methods for one authenticated agent."""

    async def call(self, method: str, params: dict[str, Any]) -> Any: ...

    async def wait(self, method: str, params: dict[str, Any]) -> Any:
        """A call that may block long; cancelling it must end the wait on
        the hub too."""
        ...


Progress = Callable[[float, float | None, str], Awaitable[None]]


async def _no_progress(done: float, total: float | None, message: str) -> None:
    return None


class Retry(Exception):
    """The hub could not be reached: the outcome of a write is unknown."""


@dataclass(slots=True)
class ToolCall:
    caller: Caller
    progress: Progress = _no_progress


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


Run = Callable[[ToolCall, Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    args: type[Args]
    run: Run
    summary: Callable[[dict[str, Any]], str]
    read_only: bool = False

    def input_schema(self) -> dict[str, Any]:
        return _compact(self.args.model_json_schema())


def _compact(schema: Any) -> Any:
    """The model's JSON Schema, shorter: every tool description is paid
    for in the model's context. No titles, and an optional field is its
    type (``anyOf [T, null]`` with a null default says no more than T
    left out of ``required``)."""
    if isinstance(schema, list):
        return [_compact(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    options = schema.get("anyOf")
    if isinstance(options, list) and schema.get("default", 0) is None:
        kept = [o for o in options if o != {"type": "null"}]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
            return _compact({**kept[0], **rest})
    return {k: _compact(v) for k, v in schema.items() if k != "title"}


TOOLS: dict[str, Tool] = {}


def tool(
    name: str,
    description: str,
    args: type[Args],
    summary: Callable[[dict[str, Any]], str],
    *,
    read_only: bool = False,
) -> Callable[[Run], Run]:
    def register(run: Run) -> Run:
        TOOLS[name] = Tool(name, description, args, run, summary, read_only)
        return run

    return register


# -- waiting -------------------------------------------------------------------------------


Resume = Callable[[], Awaitable[tuple[str, dict[str, Any]]]]


async def _waited(
    call: ToolCall,
    method: str,
    params: dict[str, Any],
    seconds: float,
    what: str,
    resume: Resume | None = None,
) -> Any:
    """Run a long wait with progress every PROGRESS_SECONDS. If the hub
    goes away meanwhile, wait again until the time is up: with the same
    call, or with the one ``resume`` names (a wait that resumes from the
    store instead of repeating a send)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds

    async def ticker() -> None:
        while True:
            elapsed = loop.time() - started
            await call.progress(elapsed, seconds, f"{what} ({elapsed:.0f} s of {seconds:.0f})")
            await asyncio.sleep(PROGRESS_SECONDS)

    ticking = asyncio.create_task(ticker())
    try:
        while True:
            remaining = deadline - loop.time()
            try:
                return await call.caller.wait(method, {**params, "wait": max(remaining, 0.01)})
            except Retry:
                if deadline - loop.time() < 1:
                    raise
                await asyncio.sleep(0.5)
                if resume is not None:
                    method, params = await resume()
    finally:
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking


# -- the team ---------------------------------------------------------------------------------


class NoArgs(Args):
    pass


def _status_line(r: dict[str, Any]) -> str:
    me = r.get("workspace") or {}
    online = [a["alias"] for a in r.get("agents", []) if a.get("online")]
    return (
        f"you are {me.get('alias')}; online: {', '.join(online) or 'nobody'}; "
        f"{len(r.get('locks', []))} reservations, {r.get('escalations_pending', 0)} escalations"
    )


@tool(
    "status",
    "Who you are, the team, their claims and reservations.",
    NoArgs,
    _status_line,
    read_only=True,
)
async def status(call: ToolCall, args: NoArgs) -> dict[str, Any]:
    result: dict[str, Any] = await call.caller.call("status.get", {})
    return result


class PolicyArgs(Args):
    role: str | None = Field(default=None, description="default: your role")


@tool(
    "policy",
    "Project invariants and the playbook for a role.",
    PolicyArgs,
    lambda r: (
        f"policy v{r.get('version')}: {len(r.get('invariants', []))} invariants, "
        f"role {(r.get('selected_role') or {}).get('role') or 'none'}"
    ),
    read_only=True,
)
async def policy(call: ToolCall, args: PolicyArgs) -> dict[str, Any]:
    role = args.role
    if role is None:
        role = (await call.caller.call("session.whoami", {})).get("role") or None
    params: dict[str, Any] = {"role": role, "only_selected": True} if role else {}
    result: dict[str, Any] = await call.caller.call("policy.get", params)
    return result


# -- issues -------------------------------------------------------------------------------------


class ReadyArgs(Args):
    limit: int = Field(default=20, ge=1, le=200)


@tool(
    "ready",
    "Open, unclaimed, unblocked issues, by priority.",
    ReadyArgs,
    lambda r: f"{r['count']} ready: " + ", ".join(i["bead_id"] for i in r["issues"][:10]),
    read_only=True,
)
async def ready(call: ToolCall, args: ReadyArgs) -> dict[str, Any]:
    result: dict[str, Any] = await call.caller.call("beads.ready", {"limit": args.limit})
    return result


class IssueArgs(Args):
    bead_id: str = Field(min_length=1, max_length=100)


#: ``wait`` of a claim or a reservation: queue for what another agent holds.
QueueField = Field(default=0, ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait in line")


async def _maybe_waited(
    call: ToolCall, method: str, params: dict[str, Any], wait: float
) -> dict[str, Any]:
    """``method`` at once, or waiting in line on the hub (with progress,
    and cancelled with the tool call). Repeating a queued claim or acquire
    after a lost connection is harmless: what is already the caller's
    stays so."""
    if wait <= 0:
        result: dict[str, Any] = await call.caller.call(method, params)
        return result
    waited: dict[str, Any] = await _waited(call, method, params, wait, "waiting in line")
    return waited


class ClaimArgs(IssueArgs):
    wait: float = QueueField


def _claim_line(r: dict[str, Any]) -> str:
    line = f"claimed {r['claim']['bead_id']}" + ("" if r["acquired"] else " (already yours)")
    if r.get("waited_seconds"):
        line += f" after {r['waited_seconds']:.0f} s in line"
    return line


@tool("claim", "Claim an issue so nobody else works on it; with wait, queue for it.",
      ClaimArgs, _claim_line)  # fmt: skip
async def claim(call: ToolCall, args: ClaimArgs) -> dict[str, Any]:
    return await _maybe_waited(call, "claims.claim", {"bead_id": args.bead_id}, args.wait)


@tool(
    "release",
    "Release your claim on an issue.",
    IssueArgs,
    lambda r: f"released {r['bead_id']}" if r["released"] else f"{r['bead_id']} was not claimed",
)
async def release(call: ToolCall, args: IssueArgs) -> dict[str, Any]:
    result: dict[str, Any] = await call.caller.call("claims.release", {"bead_id": args.bead_id})
    return result


# -- files --------------------------------------------------------------------------------------


class ReserveArgs(Args):
    paths: list[str] = Field(min_length=1, max_length=500, description="repo-relative; globs ok")
    ttl_seconds: int | None = Field(default=None, ge=1, le=3600)
    exclusive: bool = True
    reason: str | None = Field(default=None, max_length=500)
    bead_id: str | None = Field(default=None, max_length=100)
    wait: float = QueueField


def _reserve_line(r: dict[str, Any]) -> str:
    line = f"reserved {len(r['granted'])} path(s)"
    if r["conflicts"]:
        held = ", ".join(f"{c['path']} ({c['held_by']})" for c in r["conflicts"][:5])
        line += f"; {len(r['conflicts'])} held by others: {held}"
    if r.get("waited_seconds"):
        line += f"; waited {r['waited_seconds']:.0f} s in line"
    return line


@tool(
    "reserve",
    "Reserve files you edit (conflicts are reported); with wait, queue for them.",
    ReserveArgs,
    _reserve_line,
)
async def reserve(call: ToolCall, args: ReserveArgs) -> dict[str, Any]:
    params = args.model_dump(exclude_none=True, exclude={"wait"})
    return await _maybe_waited(call, "reservations.acquire", params, args.wait)


class PathsArgs(Args):
    paths: list[str] = Field(min_length=1, max_length=500)


@tool(
    "unreserve",
    "Release your file reservations.",
    PathsArgs,
    lambda r: (
        f"released {len(r['released'])} path(s)"
        + (f"; not yours: {', '.join(r['not_owner'])}" if r["not_owner"] else "")
    ),
)
async def unreserve(call: ToolCall, args: PathsArgs) -> dict[str, Any]:
    result: dict[str, Any] = await call.caller.call("reservations.release", {"paths": args.paths})
    return result


class ReservationsArgs(Args):
    holder_alias: str | None = None
    path_prefix: str | None = None


@tool(
    "reservations",
    "Live file reservations of the team.",
    ReservationsArgs,
    lambda r: (
        f"{r['count']} reservations: "
        + ", ".join(f"{x['path']} ({x['holder_alias']})" for x in r["reservations"][:10])
    ),
    read_only=True,
)
async def reservations(call: ToolCall, args: ReservationsArgs) -> dict[str, Any]:
    params = args.model_dump(exclude_none=True)
    result: dict[str, Any] = await call.caller.call("reservations.list", params)
    return result


# -- mail ---------------------------------------------------------------------------------------


class MailSendArgs(Args):
    to: list[str] = Field(min_length=1, max_length=500, description='aliases, or ["all"]')
    body: str = Field(min_length=1)
    subject: str = Field(default="", max_length=200)
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    thread_id: str | None = Field(default=None, description="reply in this thread")


@tool(
    "mail_send",
    "Send mail (async). Use chat_send for a quick answer.",
    MailSendArgs,
    lambda r: f"mail {r['message_id']} sent to {', '.join(r['to'])}",
)
async def mail_send(call: ToolCall, args: MailSendArgs) -> dict[str, Any]:
    params = args.model_dump(exclude_none=True, exclude={"to"})
    if args.to == ["all"]:
        params["to_all"] = True
    else:
        params["to"] = args.to
    result: dict[str, Any] = await call.caller.call("mail.send", params)
    return result


class InboxArgs(Args):
    unread_only: bool = True
    limit: int = Field(default=20, ge=1, le=200)


def _inbox_line(r: dict[str, Any]) -> str:
    heads = "; ".join(f"{m['from_alias']}: {m['subject'] or m['body'][:40]}" for m in r["messages"])
    return f"{r['count']} message(s)" + (f": {heads}" if heads else "")


@tool("mail_inbox", "Your mail, newest first.", InboxArgs, _inbox_line, read_only=True)
async def mail_inbox(call: ToolCall, args: InboxArgs) -> dict[str, Any]:
    result: dict[str, Any] = await call.caller.call("mail.inbox", args.model_dump())
    return result


class AckArgs(Args):
    message_ids: list[str] = Field(min_length=1, max_length=1000)


@tool("mail_ack", "Mark messages done (acked).", AckArgs, lambda r: f"acked {r['count']}")
async def mail_ack(call: ToolCall, args: AckArgs) -> dict[str, Any]:
    result: dict[str, Any] = await call.caller.call("mail.ack", args.model_dump())
    return result


class ReceiptsArgs(Args):
    message_ids: list[str] | None = Field(default=None, description="default: your last sent")


@tool(
    "mail_receipts",
    "Delivery states of mail you sent: stored/pushed/shown/read/acked.",
    ReceiptsArgs,
    lambda r: (
        "; ".join(f"{m['message_id'][:8]} {m['state']}" for m in r["messages"][:10])
        or "no mail sent"
    ),
    read_only=True,
)
async def mail_receipts(call: ToolCall, args: ReceiptsArgs) -> dict[str, Any]:
    result: dict[str, Any] = await call.caller.call(
        "mail.receipts", args.model_dump(exclude_none=True)
    )
    return result


# -- chat ---------------------------------------------------------------------------------------

WaitField = Field(default=0, ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait for a reply")


def _chat_line(r: dict[str, Any]) -> str:
    reply = r.get("reply")
    if reply:
        return f"{r['status']}: {reply['from_alias']}: {reply['body'][:200]}"
    if r.get("status") == "timeout":
        return f"no reply yet; chat_wait session_id={r['session_id']} to keep waiting"
    return f"{r.get('status', 'sent')} in session {r['session_id']}"


async def _send_and_wait(
    call: ToolCall, params: dict[str, Any], wait: float, to: list[str] | None = None
) -> dict[str, Any]:
    """``chat.send``, waiting on the hub when ``wait`` (so the message says
    its sender waits). If the connection drops during the wait, the wait
    resumes with ``chat.wait`` in that conversation."""
    if wait <= 0:
        sent: dict[str, Any] = await call.caller.call("chat.send", params)
        return sent

    async def resume() -> tuple[str, dict[str, Any]]:
        session_id = params.get("session_id") or await _session_with(call, to or [])
        return "chat.wait", {"session_id": session_id}

    result: dict[str, Any] = await _waited(
        call, "chat.send", params, wait, "waiting for a reply", resume
    )
    return result


async def _session_with(call: ToolCall, to: list[str], missing: bool = False) -> str:
    """The conversation of exactly the caller and ``to`` (none: NOT_FOUND
    with ``missing``, else the outcome of the send is unknown)."""
    me = (await call.caller.call("session.whoami", {}))["alias"]
    wanted = {*to, me}
    for session in (await call.caller.call("chat.sessions", {"limit": 1000}))["sessions"]:
        if set(session["participants"]) == wanted:
            return str(session["session_id"])
    if missing:
        raise RpcError(ErrorCode.NOT_FOUND, f"no chat with {', '.join(sorted(to))}")
    raise Retry()


class ChatSendArgs(Args):
    to: list[str] = Field(min_length=1, max_length=50, description="aliases")
    body: str = Field(min_length=1)
    wait: float = WaitField


@tool(
    "chat_send", "Chat with agents; with wait, block until one replies.", ChatSendArgs, _chat_line
)
async def chat_send(call: ToolCall, args: ChatSendArgs) -> dict[str, Any]:
    return await _send_and_wait(call, {"to": args.to, "body": args.body}, args.wait, args.to)


class ChatReplyArgs(Args):
    session_id: str
    body: str = Field(min_length=1)
    wait: float = WaitField
    hang_on: bool = Field(default=False, description="ask the waiter for more time")
    leaving: bool = False


@tool("chat_reply", "Reply in a chat session (see chat_pending).", ChatReplyArgs, _chat_line)
async def chat_reply(call: ToolCall, args: ChatReplyArgs) -> dict[str, Any]:
    params = args.model_dump(exclude={"wait"})
    return await _send_and_wait(call, params, args.wait)


class ChatWaitArgs(Args):
    session_id: str | None = Field(default=None, description="or give `to`")
    to: list[str] | None = Field(default=None, max_length=50, description="the chat's aliases")
    wait: float = Field(default=60, gt=0, le=MAX_WAIT_SECONDS)
    after_message_id: str | None = Field(default=None, description="default: your last message")


@tool("chat_wait", "Keep waiting for a reply in a chat (after a timeout or reconnect).",
      ChatWaitArgs, _chat_line, read_only=True)  # fmt: skip
async def chat_wait(call: ToolCall, args: ChatWaitArgs) -> dict[str, Any]:
    if (args.session_id is None) == (args.to is None):
        raise RpcError(ErrorCode.INVALID_PARAMS, "give either session_id or to")
    session_id = args.session_id or await _session_with(call, args.to or [], missing=True)
    params = {"session_id": session_id}
    if args.after_message_id:
        params["after_message_id"] = args.after_message_id
    return await _waited(call, "chat.wait", params, args.wait, "waiting for a reply")


def _pending_line(r: dict[str, Any]) -> str:
    parts = []
    for c in r["pending"][:10]:
        waiting = " (WAITING for you)" if c.get("sender_waiting") else ""
        parts.append(f"{c['last_from']}{waiting}: {(c['last_message'] or '')[:80]}")
    return f"{len(r['pending'])} chat(s) unread" + (": " + "; ".join(parts) if parts else "")


@tool(
    "chat_pending",
    "Chats with unread messages, and who waits for you.",
    NoArgs,
    _pending_line,
    read_only=True,
)
async def chat_pending(call: ToolCall, args: NoArgs) -> dict[str, Any]:
    result: dict[str, Any] = await call.caller.call("chat.pending", {})
    return result


# -- humans ------------------------------------------------------------------------------------


class EscalateArgs(Args):
    subject: str = Field(default="", max_length=200)
    situation: str = Field(default="", max_length=20_000, description="markdown")
    bead_id: str | None = None
    wait: float = Field(default=0, ge=0, le=MAX_WAIT_SECONDS, description="seconds for an answer")
    escalation_id: str | None = Field(default=None, description="keep waiting on this one")


def _escalation_line(r: dict[str, Any]) -> str:
    if r["status"] == "answered":
        return f"answered by {r['responded_by']}: {(r['response'] or '')[:200]}"
    return f"escalation {r['escalation_id']} {r['status']}"


@tool(
    "escalate",
    "Ask a human to decide; with wait, block for the answer.",
    EscalateArgs,
    _escalation_line,
)
async def escalate(call: ToolCall, args: EscalateArgs) -> dict[str, Any]:
    if args.escalation_id is None:
        if not (args.subject and args.situation):
            raise RpcError(ErrorCode.INVALID_PARAMS, "give subject and situation")
        params = args.model_dump(include={"subject", "situation", "bead_id"}, exclude_none=True)
        escalation: dict[str, Any] = await call.caller.call("escalations.create", params)
    else:
        escalation = await call.caller.call(
            "escalations.get", {"escalation_id": args.escalation_id}
        )
    if args.wait <= 0 or escalation["status"] != "pending":
        return escalation
    eid = escalation["escalation_id"]
    result: dict[str, Any] = await _waited(
        call, "escalations.wait", {"escalation_id": eid}, args.wait, "waiting for a human"
    )
    return result


# -- answering ---------------------------------------------------------------------------------

#: What to do next, by error code.
NEXT: dict[int, str] = {
    ErrorCode.INVALID_PARAMS: "Fix the arguments and call again.",
    ErrorCode.NOT_FOUND: "Check the name or id: `status` lists the team, `ready` the issues.",
    ErrorCode.CONFLICT: "Someone else holds it: pick other work (`ready`) or ask them "
    "(`chat_send`).",
    ErrorCode.FORBIDDEN: "Your role may not do this: `escalate` to a human.",
    ErrorCode.UNAUTHORIZED: "The api key is not valid: run `bdh :init` or set BEADHUB_API_KEY.",
    ErrorCode.TOO_LARGE: "Send less: shorten the body or split it.",
    ErrorCode.RATE_LIMITED: "Too many calls at once: retry in a moment.",
    ErrorCode.UNAVAILABLE: "The hub is unavailable: retry in a few seconds.",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """A tool's answer: the JSON object and the one-line text."""

    data: dict[str, Any]
    text: str
    is_error: bool = False

    def wire(self) -> dict[str, Any]:
        """As a 2026-07-28 ``CallToolResult`` in JSON (a task's result)."""
        return {
            "resultType": "complete",
            "content": [{"type": "text", "text": self.text}],
            "structuredContent": self.data,
            "isError": self.is_error,
        }


def refusal(exc: RpcError) -> Outcome:
    hint = NEXT.get(int(exc.code), "")
    error = {"code": int(exc.code), "message": exc.message, "data": exc.data, "next": hint}
    return Outcome({"error": error}, f"{exc.message}. {hint}".strip(), True)


async def run(name: str, arguments: dict[str, Any] | None, call: ToolCall) -> Outcome:
    """Call one tool; every refusal is an Outcome with ``is_error``."""
    found = TOOLS.get(name)
    if found is None:
        return refusal(RpcError(ErrorCode.METHOD_NOT_FOUND, f"no tool {name!r}"))
    try:
        args = found.args.model_validate(arguments or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        return refusal(RpcError(ErrorCode.INVALID_PARAMS, f"invalid arguments: {problems}"))
    try:
        data = await found.run(call, args)
    except RpcError as exc:
        return refusal(exc)
    except Retry:
        what = "nothing was changed" if found.read_only else "it may or may not have happened"
        return refusal(RpcError(ErrorCode.UNAVAILABLE, f"lost the connection to the hub; {what}"))
    return Outcome(data, found.summary(data))


# -- waiting calls as tasks ----------------------------------------------------------------

#: The tools that may wait, and what they wait for.
WAITING_FOR = {
    "chat_send": "waiting for a reply",
    "chat_reply": "waiting for a reply",
    "chat_wait": "waiting for a reply",
    "escalate": "waiting for a human",
    "claim": "waiting in line",
    "reserve": "waiting in line",
}


@dataclass(frozen=True, slots=True)
class WaitPlan:
    """A call that will wait: for how long, for what, and the call that
    picks the wait up again (its ``wait`` left out) if it is cut off."""

    seconds: float
    waiting_for: str
    resume_tool: str
    resume_arguments: dict[str, Any]


def wait_plan(name: str, arguments: dict[str, Any] | None) -> WaitPlan | None:
    """The plan of a call that waits; None for one that answers at once,
    or that is refused at once (bad arguments)."""
    found = TOOLS.get(name)
    if found is None or name not in WAITING_FOR:
        return None
    try:
        args = found.args.model_validate(arguments or {})
    except ValidationError:
        return None
    seconds = float(getattr(args, "wait", 0) or 0)
    if seconds <= 0 or not _complete(args):
        return None
    resume = {k: v for k, v in (arguments or {}).items() if k != "wait"}
    tool = name
    # A send is never repeated: the wait resumes in its conversation, where
    # chat_wait reads the reply that came meanwhile. Claims, reservations
    # and escalations repeat harmlessly (escalations.create with its key).
    if isinstance(args, ChatSendArgs):
        tool, resume = "chat_wait", {"to": args.to}
    elif isinstance(args, ChatReplyArgs):
        tool, resume = "chat_wait", {"session_id": args.session_id}
    return WaitPlan(seconds, WAITING_FOR[name], tool, resume)


def _complete(args: Args) -> bool:
    """Arguments the tool does not refuse before it waits."""
    if isinstance(args, ChatWaitArgs):
        return (args.session_id is None) != (args.to is None)
    if isinstance(args, EscalateArgs):
        return args.escalation_id is not None or bool(args.subject and args.situation)
    return True
