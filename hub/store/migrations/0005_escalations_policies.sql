-- Escalations (an agent asks a human) and versioned project policies.

-- Status is not stored: pending / answered / expired follows from
-- responded_at and expires_at at read time, so nothing has to sweep
-- expired rows.
CREATE TABLE escalations (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id              uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    -- Kept when the agent is deleted: the question and its answer stay readable.
    agent_id                uuid REFERENCES agents(id) ON DELETE SET NULL,
    alias                   text NOT NULL,
    subject                 text NOT NULL,
    situation               text NOT NULL,
    bead_id                 text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    expires_at              timestamptz NOT NULL,
    response                text,
    responded_by            text,
    responded_by_agent_id   uuid REFERENCES agents(id) ON DELETE SET NULL,
    responded_at            timestamptz
);
CREATE INDEX escalations_project_created ON escalations (project_id, created_at DESC);
CREATE INDEX escalations_open ON escalations (project_id, expires_at)
    WHERE responded_at IS NULL;

-- Every version of a project's policy is kept; (project_id, version) is
-- unique so two writers can never both create the same version.
CREATE TABLE policies (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    version     integer NOT NULL CHECK (version > 0),
    -- [{id, title, body_md}]
    invariants  jsonb NOT NULL,
    -- {role: {title, playbook_md}}
    roles       jsonb NOT NULL,
    created_by  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, version),
    UNIQUE (project_id, id)
);

-- Which version is in force: one row per project, repointed on activation.
-- The composite key makes pointing at another project's policy impossible.
CREATE TABLE active_policies (
    project_id   uuid PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    policy_id    uuid NOT NULL,
    activated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (project_id, policy_id) REFERENCES policies (project_id, id) ON DELETE CASCADE
);
