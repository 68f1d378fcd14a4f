-- Beads issues synced from each repo's .beads/issues.jsonl, and the claims
-- that make working on an issue exclusive within a project.

-- One row per issue. Bead ids are unique within a project (claims are too).
-- The columns are the fields the hub queries; `raw` is the object exactly as
-- bd wrote it, unknown fields included, so nothing bdh sends is lost.
CREATE TABLE beads_issues (
    project_id  uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    bead_id     text NOT NULL,
    -- The repo whose full sync owns this issue (NULL: synced without a repo).
    repo_id     uuid REFERENCES repos(id) ON DELETE SET NULL,
    title       text NOT NULL DEFAULT '',
    -- open | in_progress | blocked | closed (other bd statuses count as open)
    status      text NOT NULL DEFAULT 'open',
    priority    integer,
    issue_type  text NOT NULL DEFAULT '',
    assignee    text NOT NULL DEFAULT '',
    labels      text[] NOT NULL DEFAULT '{}',
    -- From the `parent-child` dependency: groups work under an epic.
    parent_id   text,
    -- From the `blocks` dependencies: this issue waits for these.
    blocked_by  text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz,
    updated_at  timestamptz,
    closed_at   timestamptz,
    raw         jsonb NOT NULL,
    synced_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, bead_id)
);
CREATE INDEX beads_issues_ready ON beads_issues (project_id, priority, created_at)
    WHERE status = 'open';
CREATE INDEX beads_issues_repo ON beads_issues (project_id, repo_id);

-- Who works on what. The unique (project_id, bead_id) is what makes a claim
-- exclusive: of N concurrent INSERTs exactly one creates the row. No foreign
-- key to beads_issues: bdh may claim an issue before its first sync.
CREATE TABLE claims (
    project_id  uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    bead_id     text NOT NULL,
    agent_id    uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    claimed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (project_id, bead_id)
);
CREATE INDEX claims_agent ON claims (agent_id, claimed_at);
