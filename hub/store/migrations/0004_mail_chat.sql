-- Mail (async: subject/body, inbox, read/ack, threads) and chat
-- (conversations between agents, with send-and-wait).

-- One row per sent message, one delivery per recipient: a message to the
-- whole team is stored once, and each recipient reads/acks its own copy.
CREATE TABLE mail_messages (
    id            uuid PRIMARY KEY,
    project_id    uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    -- NULL when a human (dashboard) sent it; from_alias is then "human:<name>".
    from_agent_id uuid REFERENCES agents(id) ON DELETE SET NULL,
    from_alias    text NOT NULL,
    subject       text NOT NULL DEFAULT '',
    body          text NOT NULL,
    priority      text NOT NULL DEFAULT 'normal'
                  CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    -- A message that starts a thread is its own thread (thread_id = id).
    thread_id     uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX mail_messages_thread ON mail_messages (project_id, thread_id, created_at);

CREATE TABLE mail_deliveries (
    message_id    uuid NOT NULL REFERENCES mail_messages(id) ON DELETE CASCADE,
    recipient_id  uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    project_id    uuid NOT NULL,
    -- Copied from the message so the inbox is read from one index.
    created_at    timestamptz NOT NULL,
    read_at       timestamptz,
    PRIMARY KEY (message_id, recipient_id)
);
CREATE INDEX mail_deliveries_inbox
    ON mail_deliveries (recipient_id, project_id, created_at DESC, message_id DESC);
CREATE INDEX mail_deliveries_unread
    ON mail_deliveries (recipient_id, project_id) WHERE read_at IS NULL;

-- A conversation is identified by its set of participants: opening a chat
-- with the same agents again reuses it (participant_key is the sorted ids).
CREATE TABLE chat_sessions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id      uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    participant_key text NOT NULL,
    created_by      uuid REFERENCES agents(id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, participant_key)
);

CREATE TABLE chat_participants (
    session_id     uuid NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    agent_id       uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    project_id     uuid NOT NULL,
    -- Messages with seq <= this are read by this participant.
    last_read_seq  bigint NOT NULL DEFAULT 0,
    -- Set while this participant blocks in send-and-wait, so pending lists
    -- on every instance can say "the sender is waiting, N s left".
    waiting_until  timestamptz,
    -- Set when the participant's last message said it is leaving.
    left_at        timestamptz,
    PRIMARY KEY (session_id, agent_id)
);
CREATE INDEX chat_participants_agent ON chat_participants (agent_id, project_id);

CREATE TABLE chat_messages (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq             bigserial NOT NULL,
    session_id      uuid NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    project_id      uuid NOT NULL,
    from_agent_id   uuid REFERENCES agents(id) ON DELETE SET NULL,
    from_alias      text NOT NULL,
    body            text NOT NULL,
    sender_leaving  boolean NOT NULL DEFAULT false,
    hang_on         boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX chat_messages_session ON chat_messages (session_id, seq);
