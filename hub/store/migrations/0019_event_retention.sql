-- Retention (hub/services/retention.py). Events older than the window are
-- deleted in batches; each project's horizon records the newest event
-- deleted, so a client resuming from an older cursor is told to resync
-- instead of silently missing what was pruned. Only the pruner writes it,
-- so its foreign key costs the hot paths nothing.
CREATE TABLE event_horizons (
    project_id     uuid PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    pruned_through bigint NOT NULL,
    pruned_at      timestamptz NOT NULL DEFAULT now()
);
