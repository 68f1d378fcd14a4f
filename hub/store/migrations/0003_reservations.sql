-- File reservations: short-lived advisory locks on repo paths and globs.
--
-- A row is live while expires_at > now(); every read filters on that, so an
-- expired row is invisible (and never conflicts) before anything deletes
-- it. Deleting it (and announcing reservation.expired) is done by a timer
-- on the instance that granted it, with a slow sweep as the safety net.
CREATE TABLE reservations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id      uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    holder_agent_id uuid NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    -- The holder's alias when it reserved; conflicts name it without a join.
    holder_alias    text NOT NULL,
    -- The normalised path or glob. Bytewise ("C") order so a glob's
    -- candidate paths are one index range: [literal_prefix, successor).
    path            text COLLATE "C" NOT NULL,
    is_glob         boolean NOT NULL,
    -- Globs only: the anchored regex the glob compiles to.
    pattern_regex   text,
    -- Text every matching path starts / ends with (glob vs glob overlap).
    literal_prefix  text COLLATE "C" NOT NULL,
    literal_suffix  text COLLATE "C" NOT NULL,
    exclusive       boolean NOT NULL,
    reason          text,
    bead_id         text,
    metadata        jsonb NOT NULL DEFAULT '{}',
    acquired_at     timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    -- The same holder reserving the same pattern again renews this row.
    UNIQUE (project_id, holder_agent_id, path)
);
CREATE INDEX reservations_project_path ON reservations (project_id, path);
-- Globs are compared with every request; they are few, so keep them apart.
CREATE INDEX reservations_project_globs ON reservations (project_id) WHERE is_glob;
CREATE INDEX reservations_expires ON reservations (expires_at);

-- Serialise reservation requests that could overlap, and only those: take
-- each (key, exclusive) advisory lock for the transaction, in one global
-- order (the 64-bit key) so two requests can never deadlock. Returns the
-- time after the last lock was granted: the request's "now".
CREATE FUNCTION reservation_locks(p_project uuid, p_keys text[], p_exclusive boolean[])
RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    lock record;
BEGIN
    FOR lock IN
        SELECT hashtextextended(p_project::text || ':' || k.key, 0) AS id,
               bool_or(k.exclusive) AS exclusive
        FROM unnest(p_keys, p_exclusive) AS k(key, exclusive)
        GROUP BY 1
        ORDER BY 1
    LOOP
        IF lock.exclusive THEN
            PERFORM pg_advisory_xact_lock(lock.id);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(lock.id);
        END IF;
    END LOOP;
    RETURN clock_timestamp();
END
$$;
