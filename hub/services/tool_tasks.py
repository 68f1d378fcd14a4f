"""Tasks: a waiting tool call (a chat send that waits for the reply, an
escalation that waits for the human, a claim that waits in line) answered
at once with a handle, and finished in the background.

The task is a row (``tool_tasks``, migration 0025), so any instance answers
for it. The instance that took the call runs the wait and writes the
outcome once (``finish``: only while the task is still ``working`` and
still its own). A cancel is a conditional update, then a doorbell on the
hub-wide ``tool_tasks`` channel; the instance running the wait cancels it
there, which ends the wait on the hub as a disconnect would. If the runner
died (its bus heartbeat is gone), the next read by the task's owner
*adopts* the task: one conditional update hands it over, and the new
runner waits again from the store with the task's resume call (for a chat
send: ``chat_wait``, which reads what arrived meanwhile), until the same
deadline. Nothing here loops over the database: waits are woken by the
bus, as everywhere else.

An agent sees and cancels only its own tasks; any other id is "not found".
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import asyncpg

from hub.services.context import Actor, Hub
from protocol.errors import not_found

#: The hub-wide doorbell channel, and its one message type.
CHANNEL = "tool_tasks"
CANCELLED = "tool_task.cancelled"
#: How long a task is kept after its wait's deadline.
KEEP_SECONDS = 3600

_COLUMNS = """id, tool, resume_tool, resume_arguments, waiting_for, status, result, error,
runner, created_at, updated_at, deadline, expires_at"""

_CREATE = f"""
INSERT INTO tool_tasks (id, project_id, agent_id, tool, resume_tool, resume_arguments,
                        waiting_for, runner, deadline, expires_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, now() + make_interval(secs => $9),
        now() + make_interval(secs => $9 + $10))
RETURNING {_COLUMNS}
"""
_GET = f"SELECT {_COLUMNS} FROM tool_tasks WHERE id = $1 AND project_id = $2 AND agent_id = $3"
_FINISH = """
UPDATE tool_tasks SET status = $2, result = $3::jsonb, error = $4::jsonb, updated_at = now()
WHERE id = $1 AND status = 'working' AND runner = $5
"""
_CANCEL = f"""
UPDATE tool_tasks SET status = 'cancelled', updated_at = now()
WHERE id = $1 AND project_id = $2 AND agent_id = $3 AND status = 'working'
RETURNING {_COLUMNS}
"""
_ADOPT = f"""
UPDATE tool_tasks SET runner = $4, updated_at = now()
WHERE id = $1 AND project_id = $2 AND agent_id = $3 AND status = 'working'
  AND runner IS NOT DISTINCT FROM $5
RETURNING {_COLUMNS}
"""
_RELEASE = "UPDATE tool_tasks SET runner = NULL WHERE id = ANY($1) AND runner = $2"
_ENDED = "SELECT id FROM tool_tasks WHERE id = ANY($1) AND status <> 'working'"


def _id(task_id: Any) -> str:
    """A task id as given, if it can be one (else one that matches none)."""
    return task_id if isinstance(task_id, str) and 0 < len(task_id) <= 100 else ""


async def create(
    hub: Hub,
    actor: Actor,
    *,
    tool: str,
    resume_tool: str,
    resume_arguments: dict[str, Any],
    waiting_for: str,
    wait: float,
) -> asyncpg.Record:
    """A new ``working`` task, run by this instance. It is committed when
    this returns: a read on any instance finds it."""
    agent_id = actor.require_agent()
    row: asyncpg.Record = await hub.store.fetchrow(
        _CREATE,
        secrets.token_urlsafe(24),
        actor.project_id,
        agent_id,
        tool,
        resume_tool,
        resume_arguments,
        waiting_for,
        hub.settings.instance_id,
        float(wait),
        float(KEEP_SECONDS),
    )
    return row


async def get(hub: Hub, actor: Actor, task_id: Any) -> asyncpg.Record:
    """The caller's task; NOT_FOUND for any other (another agent's too)."""
    agent_id = actor.require_agent()
    row: asyncpg.Record | None = await hub.store.fetchrow(
        _GET, _id(task_id), actor.project_id, agent_id
    )
    if row is None:
        raise not_found("task not found (or expired)", task_id=str(task_id)[:100])
    return row


async def finish(
    hub: Hub,
    task_id: str,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> bool:
    """Record the outcome of a wait this instance runs; False when the task
    was cancelled (or adopted elsewhere) first, and nothing changed."""
    done = await hub.store.execute(
        _FINISH, task_id, status, result, error, hub.settings.instance_id
    )
    return bool(done.endswith(" 1"))


async def cancel(hub: Hub, actor: Actor, task_id: Any) -> asyncpg.Record:
    """Cancel the caller's task if it is still working, and ring for its
    runner. A finished task stays as it is (cancelling it is a no-op)."""
    agent_id = actor.require_agent()
    row = await hub.store.fetchrow(_CANCEL, _id(task_id), actor.project_id, agent_id)
    if row is None:
        return await get(hub, actor, task_id)
    message = {"type": CANCELLED, "id": str(uuid.uuid4()), "task_id": row["id"]}
    await hub.relay.publish(CHANNEL, message)
    return row


async def orphaned(hub: Hub, row: asyncpg.Record, running_here: bool) -> bool:
    """Whether a working task has nobody running its wait: no runner, this
    instance without it (restarted), or a runner whose heartbeat is gone."""
    if row["status"] != "working" or running_here:
        return False
    runner = row["runner"]
    if runner is None or runner == hub.settings.instance_id:
        return True
    return not await hub.bus.instance_alive(runner)


async def adopt(hub: Hub, actor: Actor, row: asyncpg.Record) -> asyncpg.Record | None:
    """Take over an orphaned task; None if another instance took it first
    (or it finished)."""
    agent_id = actor.require_agent()
    taken: asyncpg.Record | None = await hub.store.fetchrow(
        _ADOPT, row["id"], actor.project_id, agent_id, hub.settings.instance_id, row["runner"]
    )
    return taken


async def release(hub: Hub, task_ids: list[str]) -> None:
    """This instance stops: its tasks are left for any instance to adopt."""
    if task_ids:
        await hub.store.execute(_RELEASE, task_ids, hub.settings.instance_id)


async def ended(hub: Hub, task_ids: list[str]) -> list[str]:
    """Which of these tasks are no longer working: read once after the
    bus may have lost a cancel's doorbell."""
    if not task_ids:
        return []
    return [row["id"] for row in await hub.store.fetch(_ENDED, task_ids)]
