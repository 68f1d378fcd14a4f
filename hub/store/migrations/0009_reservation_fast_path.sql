-- Reservation acquires, cheaper for PostgreSQL; the same decisions, rows
-- and events as 0006 (see there for the rest of the design).
--
-- reservation_locks: one statement instead of a plpgsql loop with one
-- PERFORM per key. Same lock ids, same global order (the 64-bit key): renew
-- takes them too.
--
-- reservation_acquire: the conflict check is its own statement, and when
-- every requested pattern is an exact path and the project has no live glob
-- reservation (one probe of reservations_project_globs), it is a plain
-- "path = ANY" lookup instead of the three-branch LATERAL of 0006: an exact
-- path can then only overlap an exact row on the same path. The conflicts
-- it finds (the holders' rows, and the requested pattern each blocks) go to
-- the write statement as arrays; that statement is shared by both cases.
-- Measured alone (pipelined batches of 16): ~1-4% less PostgreSQL CPU per
-- acquire; most of an acquire is starting the executor for the write
-- statement and building the event.

CREATE OR REPLACE FUNCTION reservation_locks(p_project uuid, p_keys text[], p_exclusive boolean[])
RETURNS timestamptz
LANGUAGE plpgsql AS $$
BEGIN
    -- The subquery's ORDER BY is the order in which the outer select list,
    -- and so each lock call, is evaluated.
    PERFORM count(CASE WHEN k.exclusive THEN pg_advisory_xact_lock(k.id)
                       ELSE pg_advisory_xact_lock_shared(k.id) END)
    FROM (
        SELECT hashtextextended(p_project::text || ':' || k.key, 0) AS id,
               bool_or(k.exclusive) AS exclusive
        FROM unnest(p_keys, p_exclusive) AS k(key, exclusive)
        GROUP BY 1
        ORDER BY 1
    ) k;
    RETURN clock_timestamp();
END
$$;

CREATE OR REPLACE FUNCTION reservation_acquire(
    p_project uuid, p_agent uuid, p_alias text, p_exclusive boolean, p_ttl double precision,
    p_reason text, p_bead_id text, p_metadata jsonb,
    p_lock_keys text[], p_lock_exclusive boolean[],
    p_paths text[], p_globs boolean[], p_regexes text[], p_prefixes text[],
    p_suffixes text[], p_lows text[], p_highs text[])
RETURNS TABLE (
    kind text, requested text, id uuid, holder_agent_id uuid, holder_alias text, path text,
    exclusive boolean, reason text, bead_id text, acquired_at timestamptz,
    expires_at timestamptz, renewed boolean, locked_at timestamptz,
    ev_seq bigint, ev_id uuid, ev_project_id uuid, ev_type text, ev_payload jsonb,
    ev_created_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_at timestamptz;
    v_requested text[];
    v_hits reservations[];
BEGIN
    IF current_setting('beadhub.reservation_locked', true) = 'on' THEN
        IF NOT reservation_try_locks(p_project, p_lock_keys, p_lock_exclusive) THEN
            RAISE EXCEPTION 'reservation locks are busy; not waiting inside a batch'
                USING ERRCODE = 'lock_not_available';
        END IF;
        v_at := clock_timestamp();
    ELSE
        v_at := reservation_locks(p_project, p_lock_keys, p_lock_exclusive);
        PERFORM set_config('beadhub.reservation_locked', 'on', true);
    END IF;
    -- Conflicts: the other holders' live rows each requested pattern
    -- overlaps (v_hits), with that pattern (v_requested). Exact paths only
    -- and no live glob in the project: only equal exact rows can overlap.
    IF NOT (true = ANY (p_globs)) AND NOT EXISTS (
        SELECT FROM reservations r
        WHERE r.project_id = p_project AND r.is_glob AND r.expires_at > v_at
    ) THEN
        SELECT array_agg(r.path), array_agg(r) INTO v_requested, v_hits
        FROM reservations r
        WHERE r.project_id = p_project AND r.path = ANY (p_paths) AND NOT r.is_glob
          AND r.expires_at > v_at AND r.holder_agent_id <> p_agent AND (r.exclusive OR p_exclusive);
    ELSE
        -- The overlap rules of hub.services.paths, as in 0006.
        SELECT array_agg(h.requested), array_agg(h.r) INTO v_requested, v_hits
        FROM (
            SELECT q.path AS requested, c AS r
            FROM unnest(p_paths, p_globs, p_regexes, p_prefixes, p_suffixes, p_lows, p_highs)
                     WITH ORDINALITY AS q(path, is_glob, regex, prefix, suffix, low, high, n)
            CROSS JOIN LATERAL (
                SELECT r.* FROM reservations r
                WHERE r.project_id = p_project AND NOT q.is_glob AND NOT r.is_glob
                  AND r.path = q.path
                UNION ALL
                SELECT r.* FROM reservations r
                WHERE r.project_id = p_project AND q.is_glob AND NOT r.is_glob
                  AND r.path >= q.low AND r.path < q.high AND r.path ~ q.regex
                UNION ALL
                SELECT r.* FROM reservations r
                WHERE r.project_id = p_project AND r.is_glob AND CASE
                    WHEN q.is_glob THEN
                        (starts_with(r.literal_prefix, q.prefix)
                         OR starts_with(q.prefix, r.literal_prefix))
                        AND (right(r.literal_suffix, length(q.suffix)) = q.suffix
                             OR right(q.suffix, length(r.literal_suffix)) = r.literal_suffix)
                    ELSE starts_with(q.path, r.literal_prefix) AND q.path ~ r.pattern_regex
                END
            ) c
            WHERE c.expires_at > v_at AND c.holder_agent_id <> p_agent
              AND (c.exclusive OR p_exclusive)
        ) h;
    END IF;
    RETURN QUERY
    WITH q AS (
        SELECT * FROM unnest(p_paths, p_globs, p_regexes, p_prefixes, p_suffixes)
            WITH ORDINALITY AS q(path, is_glob, regex, prefix, suffix, n)
        WHERE v_requested IS NULL OR NOT q.path = ANY (v_requested)
    ),
    old AS (
        SELECT r.id, r.path, r.exclusive, r.reason, r.bead_id, r.acquired_at, r.expires_at
        FROM reservations r
        WHERE r.project_id = p_project AND r.holder_agent_id = p_agent AND r.path = ANY(p_paths)
    ),
    ins AS (
        INSERT INTO reservations AS r (
            project_id, holder_agent_id, holder_alias, path, is_glob, pattern_regex,
            literal_prefix, literal_suffix, exclusive, reason, bead_id, metadata,
            acquired_at, expires_at)
        SELECT p_project, p_agent, p_alias, q.path, q.is_glob, q.regex, q.prefix, q.suffix,
               p_exclusive, p_reason, p_bead_id, coalesce(p_metadata, '{}'::jsonb),
               v_at, v_at + make_interval(secs => p_ttl)
        FROM q
        ON CONFLICT (project_id, holder_agent_id, path) DO UPDATE SET
            id = CASE WHEN r.expires_at > v_at THEN r.id ELSE excluded.id END,
            acquired_at = CASE WHEN r.expires_at > v_at THEN r.acquired_at
                               ELSE excluded.acquired_at END,
            reason = CASE WHEN r.expires_at > v_at THEN coalesce(p_reason, r.reason)
                          ELSE p_reason END,
            bead_id = CASE WHEN r.expires_at > v_at THEN coalesce(p_bead_id, r.bead_id)
                           ELSE p_bead_id END,
            metadata = CASE WHEN r.expires_at > v_at THEN coalesce(p_metadata, r.metadata)
                            ELSE excluded.metadata END,
            holder_alias = excluded.holder_alias,
            exclusive = excluded.exclusive,
            expires_at = excluded.expires_at
        RETURNING r.id, r.path, r.exclusive, r.reason, r.bead_id, r.acquired_at,
                  r.expires_at, (r.xmax <> 0) AS updated
    ),
    done AS (
        SELECT i.*, q.n, o.id AS old_id, o.exclusive AS old_exclusive, o.reason AS old_reason,
               o.bead_id AS old_bead_id, o.acquired_at AS old_acquired_at,
               o.expires_at AS old_expires_at,
               coalesce(i.updated AND o.expires_at > v_at, false) AS renewed
        FROM ins i JOIN q ON q.path = i.path LEFT JOIN old o ON o.path = i.path
    ),
    ev AS (
        INSERT INTO events (project_id, type, recipients, payload)
        SELECT p_project, e.type, NULL, e.payload
        FROM (
            SELECT d.n, 0 AS k, 'reservation.expired' AS type,
                   reservation_event_data(d.old_id, d.path, p_alias, p_agent, d.old_exclusive,
                                          d.old_reason, d.old_bead_id, d.old_acquired_at,
                                          d.old_expires_at) AS payload
            FROM done d WHERE d.updated AND NOT d.renewed AND d.old_id IS NOT NULL
            UNION ALL
            SELECT d.n, 1,
                   CASE WHEN d.renewed THEN 'reservation.renewed' ELSE 'reservation.granted' END,
                   reservation_event_data(d.id, d.path, p_alias, p_agent, d.exclusive, d.reason,
                                          d.bead_id, d.acquired_at, d.expires_at)
            FROM done d
        ) e
        ORDER BY e.n, e.k
        RETURNING events.seq, events.id, events.project_id, events.type, events.payload,
                  events.created_at
    )
    SELECT 'granted', d.path, d.id, p_agent, p_alias, d.path, d.exclusive, d.reason,
           d.bead_id, d.acquired_at, d.expires_at, d.renewed, v_at,
           NULL::bigint, NULL::uuid, NULL::uuid, NULL::text, NULL::jsonb, NULL::timestamptz
    FROM done d
    UNION ALL
    SELECT 'conflict', h.requested, h.id, h.holder_agent_id, h.holder_alias, h.path,
           h.exclusive, h.reason, h.bead_id, h.acquired_at, h.expires_at, NULL, v_at,
           NULL, NULL, NULL, NULL, NULL, NULL
    FROM unnest(v_requested, v_hits) AS h(requested)
    UNION ALL
    SELECT 'event', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, v_at,
           ev.seq, ev.id, ev.project_id, ev.type, ev.payload, ev.created_at
    FROM ev;
END
$$;
