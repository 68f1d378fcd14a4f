-- Identity and authority (issue 15): who may join a project, humans with
-- their own credentials, granted roles, key management and an audit trail.

-- NULL: the hub's default (open while it listens on loopback, else approval).
ALTER TABLE projects ADD COLUMN join_policy text
    CHECK (join_policy IN ('open', 'approval'));

-- A role an agent declares picks its playbook; this one is granted by a human
-- and is the only one the hub trusts for coordinator powers.
ALTER TABLE agents ADD COLUMN granted_role text;
-- The host the agent was admitted from, as it reported it then: bdh's clean-up
-- of gone worktrees may delete only offline workspaces of this same host.
ALTER TABLE agents ADD COLUMN joined_hostname text NOT NULL DEFAULT '';
UPDATE agents SET joined_hostname = hostname;

ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;
ALTER TABLE api_keys ADD COLUMN revoked_by text;

-- Browser tickets: a human's (agent_id NULL, or kind 'human') or an agent's
-- own dashboard view (kind 'agent': acts as that agent, no more).
ALTER TABLE browser_tickets ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE browser_tickets ADD COLUMN kind text NOT NULL DEFAULT 'human'
    CHECK (kind IN ('human', 'agent'));
-- Tickets made before this migration were traded from agent keys: they do not
-- become human credentials.
DELETE FROM browser_tickets;

-- Hub-wide operator tokens (printed by `beadhub serve`, read by the CLI on the
-- hub host) and one-time sign-in links for one project and one human.
CREATE TABLE human_tokens (
    token_hash  bytea PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('operator', 'link')),
    -- NULL for an operator token: it may sign in to any project.
    project_id  uuid REFERENCES projects(id) ON DELETE CASCADE,
    human_name  text NOT NULL DEFAULT '',
    created_by  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

-- Agents asking to join a project under the approval policy.
CREATE TABLE join_requests (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id      uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    -- What the caller reported; it identifies the retry after admission and is
    -- shown to the human deciding, it proves nothing.
    fingerprint     text NOT NULL,
    alias           text NOT NULL,
    human_name      text NOT NULL DEFAULT '',
    role            text NOT NULL DEFAULT '',
    hostname        text NOT NULL DEFAULT '',
    workspace_path  text NOT NULL DEFAULT '',
    repo_origin     text NOT NULL DEFAULT '',
    client_address  text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'admitted', 'refused', 'joined')),
    decided_by      text,
    decided_at      timestamptz,
    agent_id        uuid REFERENCES agents(id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX join_requests_open ON join_requests (project_id, fingerprint)
    WHERE status IN ('pending', 'admitted', 'refused');

-- Invitations a human made: an init carrying one joins at once.
CREATE TABLE invitations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash  bytea NOT NULL UNIQUE,
    project_id  uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    uses_left   integer NOT NULL CHECK (uses_left >= 0),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);

-- Every human action: who, what, on what, and whether it worked. No foreign
-- key: a deleted project's trail (its deletion included) outlives it.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    project_id  uuid,
    project_slug text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    credential  text NOT NULL DEFAULT '',
    action      text NOT NULL,
    target      text NOT NULL DEFAULT '',
    outcome     text NOT NULL DEFAULT 'ok',
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_project ON audit_log (project_id, id);
