-- Outgoing webhooks, configured per project by a human: escalations and
-- chat addressed to a human are POSTed (Slack-style incoming-hook JSON,
-- signed with HMAC-SHA256 of the body under the hook's secret).
CREATE TABLE webhooks (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    url         text NOT NULL,
    secret      text NOT NULL,
    -- Event types this hook is sent (escalation.created, escalation.expired,
    -- chat.human, ...).
    events      text[] NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_project ON webhooks (project_id);

-- One row per (hook, event): what was sent, how often, how it ended.
CREATE TABLE webhook_deliveries (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id   uuid NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    project_id   uuid NOT NULL,
    event_type   text NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    last_status  integer,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at DESC);
