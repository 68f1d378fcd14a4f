-- Waiting MCP tool calls run as tasks (the MCP Tasks extension,
-- hub.services.tool_tasks): the task is a row, so a `tasks/get` or a
-- `tasks/cancel` on any instance answers from it, and an instance whose
-- runner died resumes the wait from `resume_tool` / `resume_arguments`.
-- `id` is the task id the client holds: random, not guessable. `runner`
-- is the instance running the wait (NULL: none). A task is kept until
-- `expires_at` (its ttl), then pruned by the leases sweep.
CREATE TABLE tool_tasks (
    id               text PRIMARY KEY,
    project_id       uuid NOT NULL,
    agent_id         uuid NOT NULL,
    tool             text NOT NULL,
    resume_tool      text NOT NULL,
    resume_arguments jsonb NOT NULL,
    waiting_for      text NOT NULL,
    status           text NOT NULL DEFAULT 'working'
                     CHECK (status IN ('working', 'completed', 'failed', 'cancelled')),
    result           jsonb,
    error            jsonb,
    runner           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deadline         timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL
);
CREATE INDEX tool_tasks_expiry ON tool_tasks (expires_at);
