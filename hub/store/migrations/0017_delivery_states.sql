-- Delivery states of each copy of a message (hub/services/delivery.py):
-- stored (created_at) -> pushed to a session -> shown to the model by a
-- hook -> read (returned by an inbox/thread listing) -> acked (read_at).
-- Nullable columns without defaults: adding them rewrites nothing, and
-- mail_send_batch (0012) keeps inserting only the columns it names.
ALTER TABLE mail_deliveries
    ADD COLUMN IF NOT EXISTS pushed_at timestamptz,
    ADD COLUMN IF NOT EXISTS shown_at timestamptz,
    ADD COLUMN IF NOT EXISTS opened_at timestamptz;

-- What a hook has shown an agent: answers to its escalations.
ALTER TABLE escalations ADD COLUMN IF NOT EXISTS answer_shown_at timestamptz;

-- The sender's receipts: its sent messages, newest first.
CREATE INDEX IF NOT EXISTS mail_messages_sent
    ON mail_messages (project_id, from_agent_id, created_at DESC);
