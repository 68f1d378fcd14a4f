-- Projects, repos, agents (one row per agent workspace), API keys and the
-- per-project event log that backs resume-from-cursor.
-- Only core functions: this runs on the embedded PostgreSQL (no pgcrypto)
-- and on stock PostgreSQL 15+.

CREATE TABLE projects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE repos (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id       uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    canonical_origin text NOT NULL,
    name             text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, canonical_origin)
);
CREATE INDEX repos_canonical_origin ON repos (canonical_origin);

-- An agent is one workspace (a git worktree with a coding agent in it);
-- bdh calls its id both agent_id and workspace_id.
CREATE TABLE agents (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id      uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    repo_id         uuid REFERENCES repos(id) ON DELETE SET NULL,
    alias           text NOT NULL,
    human_name      text NOT NULL DEFAULT '',
    email           text NOT NULL DEFAULT '',
    role            text NOT NULL DEFAULT '',
    agent_type      text NOT NULL DEFAULT 'agent',
    program         text NOT NULL DEFAULT '',
    model           text NOT NULL DEFAULT '',
    hostname        text NOT NULL DEFAULT '',
    workspace_path  text NOT NULL DEFAULT '',
    repo            text NOT NULL DEFAULT '',
    branch          text NOT NULL DEFAULT '',
    focus           text NOT NULL DEFAULT '',
    focus_updated_at timestamptz,
    -- HTTP-only clients are online until this instant (heartbeat + TTL);
    -- WebSocket presence lives on the bus, not here.
    http_online_until timestamptz,
    last_seen       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    UNIQUE (project_id, alias)
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    agent_id    uuid REFERENCES agents(id) ON DELETE CASCADE,
    -- sha256 of the key: the key itself is shown once and never stored.
    key_hash    bytea NOT NULL UNIQUE,
    prefix      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Every pushed event is first a row here, written in the same transaction
-- as the change it announces. seq is the resume cursor.
CREATE TABLE events (
    seq         bigserial PRIMARY KEY,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    type        text NOT NULL,
    -- NULL: every agent of the project; otherwise only these agents.
    recipients  uuid[],
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX events_project_seq ON events (project_id, seq);

-- Browser tickets: the dashboard trades an api key for one of these, so the
-- key itself never sits in a URL or in the page. Stored (hashed) in the
-- database so a ticket minted on one instance works on every other.
CREATE TABLE browser_tickets (
    ticket_hash bytea PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    agent_id    uuid REFERENCES agents(id) ON DELETE CASCADE,
    human_name  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
