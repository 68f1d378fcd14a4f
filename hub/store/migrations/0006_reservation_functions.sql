-- Reservation requests in one round trip (see hub.services.reservations).

-- A timestamp as the wire shows it (hub.services.clock.iso): RFC 3339 in
-- UTC with a Z, microseconds only when non-zero. Every event payload built
-- in SQL renders its times with it (hub.services.events.iso_sql names it).
-- A one-expression SQL function: PostgreSQL inlines it into the query that
-- calls it.
CREATE FUNCTION wire_time(t timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
    || CASE WHEN extract(microseconds FROM t AT TIME ZONE 'UTC')::bigint % 1000000 = 0 THEN ''
            ELSE to_char(t AT TIME ZONE 'UTC', '.US') END
    || 'Z'
$$;

-- The payload of every reservation.* event (revoke adds revoked_by).
CREATE FUNCTION reservation_event_data(
    p_id uuid, p_path text, p_alias text, p_agent uuid, p_exclusive boolean,
    p_reason text, p_bead_id text, p_acquired_at timestamptz, p_expires_at timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
SELECT jsonb_build_object(
    'reservation_id', p_id,
    'path', p_path,
    'holder_alias', p_alias,
    'holder_agent_id', p_agent,
    'workspace_id', p_agent,
    'exclusive', p_exclusive,
    'reason', p_reason,
    'bead_id', p_bead_id,
    'acquired_at', wire_time(p_acquired_at),
    'expires_at', wire_time(p_expires_at))
$$;

-- reservation_locks without waiting: take every lock that is free at once;
-- false if any is not (the caller then aborts, dropping those it took).
CREATE FUNCTION reservation_try_locks(p_project uuid, p_keys text[], p_exclusive boolean[])
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    RETURN coalesce((
        SELECT bool_and(CASE WHEN k.exclusive THEN pg_try_advisory_xact_lock(k.id)
                             ELSE pg_try_advisory_xact_lock_shared(k.id) END)
        FROM (
            -- The keys of reservation_locks.
            SELECT hashtextextended(p_project::text || ':' || k.key, 0) AS id,
                   bool_or(k.exclusive) AS exclusive
            FROM unnest(p_keys, p_exclusive) AS k(key, exclusive)
            GROUP BY 1
        ) k), true);
END
$$;

-- An acquire: the advisory locks (reservation_locks), then the conflict
-- check, the insert or renewal of what does not conflict, and the events,
-- all in one call run in autocommit.
--
-- Group commit (hub.store.group_commit) may run several calls in one
-- transaction; the locks of each are held until that transaction commits.
-- Only the first call of a transaction waits for its locks (it holds none
-- yet); a later one takes them only if they are free and otherwise fails
-- with lock_not_available, which aborts the batch, and group commit then
-- runs each call alone. A batch therefore never waits for a lock while
-- holding others, so two batches cannot deadlock on these locks. The
-- setting beadhub.reservation_locked marks "this transaction holds some".
--
-- Why a function: a plain statement's snapshot is taken before it runs,
-- so a statement that took the locks itself would check conflicts against
-- a snapshot older than the previous lock holder's commit. A VOLATILE
-- plpgsql function takes a fresh snapshot for each statement it runs (READ
-- COMMITTED), so the query after the locks sees that commit.
--
-- Rows: 'granted' (one per pattern granted or renewed; ``renewed`` says
-- which), 'conflict' (one per other holder's live reservation a requested
-- pattern overlaps; ``requested`` is that pattern), 'event' (the stored
-- events, ev_* columns as hub.services.events.returned names them, except
-- ev_recipients: reservation events go to the whole project). ``locked_at``
-- is when the locks were all held: the request's "now".
--
-- For each pattern q, ``hit`` finds other holders' live reservations it
-- overlaps (the rules of hub.services.paths): exact rows by index (equal
-- path, or inside a glob's prefix range and matching its regex), glob rows
-- by glob-vs-path regex or glob-vs-glob prefix/suffix agreement. ``old`` is
-- the holder's rows as they were before the statement: whether the upsert
-- renewed a live row or replaced an expired one (announced as expired).
--
-- plan_cache_mode: plpgsql keeps the query's plan for the session, but
-- under "auto" PostgreSQL keeps replanning it with the values (the custom
-- plans look cheaper than the generic one); its best plan does not depend
-- on them, and planning costs more than running it.
CREATE FUNCTION reservation_acquire(
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
    RETURN QUERY
    WITH q AS (
        SELECT * FROM unnest(p_paths, p_globs, p_regexes, p_prefixes, p_suffixes, p_lows, p_highs)
            WITH ORDINALITY AS q(path, is_glob, regex, prefix, suffix, low, high, n)
    ),
    hit AS (
        SELECT q.path AS requested, c.*
        FROM q CROSS JOIN LATERAL (
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
        WHERE c.expires_at > v_at AND c.holder_agent_id <> p_agent AND (c.exclusive OR p_exclusive)
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
        WHERE NOT EXISTS (SELECT 1 FROM hit WHERE hit.requested = q.path)
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
            -- The expired row an upsert replaced, as it was ...
            SELECT d.n, 0 AS k, 'reservation.expired' AS type,
                   reservation_event_data(d.old_id, d.path, p_alias, p_agent, d.old_exclusive,
                                          d.old_reason, d.old_bead_id, d.old_acquired_at,
                                          d.old_expires_at) AS payload
            FROM done d WHERE d.updated AND NOT d.renewed AND d.old_id IS NOT NULL
            UNION ALL
            -- ... then the grant or renewal, in the order of the request.
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
    FROM hit h
    UNION ALL
    SELECT 'event', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, v_at,
           ev.seq, ev.id, ev.project_id, ev.type, ev.payload, ev.created_at
    FROM ev;
END
$$;
