-- Reservation acquires, a whole batch in one statement (hub.services.reservations,
-- written through hub.store.group_commit), as mail sends are in 0010.
--
-- Concurrent acquires used to be one call each of reservation_acquire (0006),
-- pipelined in one transaction: PostgreSQL then set up and tore down the
-- query's executor (some 40 plan nodes) for every acquire, and most of an
-- acquire's database time went there. Here one call decides a whole batch.
-- Measured from a plain client on batches of 16 acquires and 16 releases
-- (the releases set-based too): about 60% less PostgreSQL CPU per pair.
--
-- The batch's calls never overlap: group commit never puts two calls whose
-- lock keys collide in one batch (hub.services.reservations). So no call
-- can be decided differently for seeing another's write, and one statement
-- decides them all, each exactly as it would alone.
--
-- Locks. reservation_locks now takes each key with its own project, so one
-- call takes a whole batch's keys: in one pass, in one global order (the
-- 64-bit key), before anything else in its transaction. Every transaction
-- that takes these locks (a batch of acquires, a renewal) takes them this
-- way, so none can wait for a lock while holding one that another waiting
-- transaction needs: they never deadlock on these locks. (The per-call
-- scheme of 0006 needed "only the first call of a batch waits"; that is
-- gone with it.)

DROP FUNCTION reservation_acquire(
    uuid, uuid, text, boolean, double precision, text, text, jsonb, text[], boolean[],
    text[], boolean[], text[], text[], text[], text[], text[]);
DROP FUNCTION reservation_try_locks(uuid, text[], boolean[]);
DROP FUNCTION reservation_locks(uuid, text[], boolean[]);

-- Take the advisory lock of every (project, key): shared, or exclusive if
-- any of that key's entries says so. Returns the time after the last lock
-- was granted: the request's "now".
CREATE FUNCTION reservation_locks(p_projects uuid[], p_keys text[], p_exclusive boolean[])
RETURNS timestamptz
LANGUAGE plpgsql AS $$
BEGIN
    -- The subquery's ORDER BY is the order in which the outer select list,
    -- and so each lock call, is evaluated.
    PERFORM count(CASE WHEN k.exclusive THEN pg_advisory_xact_lock(k.id)
                       ELSE pg_advisory_xact_lock_shared(k.id) END)
    FROM (
        SELECT hashtextextended(k.project::text || ':' || k.key, 0) AS id,
               bool_or(k.exclusive) AS exclusive
        FROM unnest(p_projects, p_keys, p_exclusive) AS k(project, key, exclusive)
        GROUP BY 1
        ORDER BY 1
    ) k;
    RETURN clock_timestamp();
END
$$;

-- A batch of acquires: the locks, then the conflict check, the insert or
-- renewal of what does not conflict, and the events, of every call.
--
-- Why a function: a plain statement's snapshot is taken before it runs,
-- so a statement that took the locks itself would check conflicts against
-- a snapshot older than the previous lock holder's commit. A VOLATILE
-- plpgsql function takes a fresh snapshot for each statement it runs (READ
-- COMMITTED), so the query after the locks sees that commit.
--
-- The plan. Both batch functions keep one generic plan per connection
-- (plan_cache_mode): planning these queries costs more than running them.
-- And they must reach reservations through its indexes, row by row: with
-- seq scans and hash joins allowed, the planner (seeing a batch of about 10
-- and a small table) scanned the whole heap, which under this churn holds
-- thousands of dead rows between vacuums; that was half of PostgreSQL's
-- time in the benchmark. No JIT: the generic plan's estimates (100 rows per
-- jsonb_array_elements) put it above jit_above_cost, and compiling it took
-- two seconds on every call.
--
-- p_batch: one array per call, in order: [project_id, agent_id, alias,
-- exclusive, ttl (seconds), reason, bead_id, metadata, patterns, lock_keys],
-- each pattern [path, is_glob, regex, prefix, suffix, low, high] (the
-- pattern and its index range, hub.services.paths.Pattern), each lock key
-- [key, exclusive] (Pattern.lock_keys). One JSON value instead of an
-- array per field: the hub encodes it in one call, where a few hundred
-- array elements each cost a Python type check in asyncpg.
--
-- Rows, each with its ``call``: 'event' (the stored events, ev_* columns
-- as hub.services.events.returned names them; reservation events go to the
-- whole project): a pattern granted or renewed has its event, whose payload
-- says all the caller needs to know of it. 'conflict': one per other
-- holder's live reservation a requested pattern overlaps (``requested`` is
-- that pattern; ``locked_at``, when the locks were all held, the batch's
-- "now").
--

--
-- For each pattern q, ``hit`` finds other holders' live reservations it
-- overlaps (the rules of hub.services.paths): exact rows by index (equal
-- path, or inside a glob's prefix range and matching its regex), glob rows
-- by glob-vs-path regex or glob-vs-glob prefix/suffix agreement. ``old`` is
-- the holder's row as it was before the statement: whether the upsert
-- renewed a live row or replaced an expired one (announced as expired).
CREATE FUNCTION reservation_acquire_batch(p_batch jsonb)
RETURNS TABLE (
    call int, kind text, requested text, id uuid, holder_agent_id uuid, holder_alias text,
    path text, exclusive boolean, reason text, bead_id text, acquired_at timestamptz,
    expires_at timestamptz, locked_at timestamptz,
    ev_seq bigint, ev_id uuid, ev_project_id uuid, ev_type text, ev_recipients uuid[],
    ev_payload jsonb, ev_created_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET enable_bitmapscan = off
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_at timestamptz;
BEGIN
    SELECT reservation_locks(array_agg((c.v->>0)::uuid), array_agg(k.v->>0),
                             array_agg((k.v->1)::boolean))
    INTO v_at
    FROM jsonb_array_elements(p_batch) c(v), jsonb_array_elements(c.v->9) k(v);
    RETURN QUERY
    WITH c AS (
        SELECT x.call::int AS call, (x.v->>0)::uuid AS project_id, (x.v->>1)::uuid AS agent_id,
               x.v->>2 AS alias, (x.v->3)::boolean AS exclusive, (x.v->4)::float8 AS ttl,
               x.v->>5 AS reason, x.v->>6 AS bead_id, nullif(x.v->7, 'null') AS metadata,
               x.v->8 AS patterns
        FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS x(v, call)
    ),
    q AS MATERIALIZED (
        SELECT c.*, u.v->>0 AS path, (u.v->1)::boolean AS is_glob, u.v->>2 AS regex,
               u.v->>3 AS prefix, u.v->>4 AS suffix, u.v->>5 AS low, u.v->>6 AS high,
               row_number() OVER (ORDER BY c.call, u.i) AS n
        FROM c CROSS JOIN LATERAL jsonb_array_elements(c.patterns) WITH ORDINALITY AS u(v, i)
    ),
    hit AS MATERIALIZED (
        SELECT q.n, q.call, q.path AS requested, h.*
        FROM q CROSS JOIN LATERAL (
            SELECT r.* FROM reservations r
            WHERE r.project_id = q.project_id AND NOT q.is_glob AND NOT r.is_glob
              AND r.path = q.path
            UNION ALL
            SELECT r.* FROM reservations r
            WHERE r.project_id = q.project_id AND q.is_glob AND NOT r.is_glob
              AND r.path >= q.low AND r.path < q.high AND r.path ~ q.regex
            UNION ALL
            SELECT r.* FROM reservations r
            WHERE r.project_id = q.project_id AND r.is_glob AND CASE
                WHEN q.is_glob THEN
                    (starts_with(r.literal_prefix, q.prefix)
                     OR starts_with(q.prefix, r.literal_prefix))
                    AND (right(r.literal_suffix, length(q.suffix)) = q.suffix
                         OR right(q.suffix, length(r.literal_suffix)) = r.literal_suffix)
                ELSE starts_with(q.path, r.literal_prefix) AND q.path ~ r.pattern_regex
            END
        ) h
        WHERE h.expires_at > v_at AND h.holder_agent_id <> q.agent_id
          AND (h.exclusive OR q.exclusive)
    ),
    old AS MATERIALIZED (
        SELECT q.n, r.id, r.exclusive, r.reason, r.bead_id, r.acquired_at, r.expires_at
        FROM q JOIN reservations r
          ON r.project_id = q.project_id AND r.holder_agent_id = q.agent_id AND r.path = q.path
    ),
    ins AS (
        INSERT INTO reservations AS r (
            project_id, holder_agent_id, holder_alias, path, is_glob, pattern_regex,
            literal_prefix, literal_suffix, exclusive, reason, bead_id, metadata,
            acquired_at, expires_at)
        SELECT q.project_id, q.agent_id, q.alias, q.path, q.is_glob, q.regex, q.prefix,
               q.suffix, q.exclusive, q.reason, q.bead_id, coalesce(q.metadata, '{}'::jsonb),
               v_at, v_at + make_interval(secs => q.ttl)
        FROM q
        WHERE NOT EXISTS (SELECT 1 FROM hit WHERE hit.n = q.n)
        -- A live row is renewed: what the request leaves out (reason,
        -- bead, metadata) stays as it was. An expired one is replaced.
        ON CONFLICT (project_id, holder_agent_id, path) DO UPDATE SET
            id = CASE WHEN r.expires_at > v_at THEN r.id ELSE excluded.id END,
            acquired_at = CASE WHEN r.expires_at > v_at THEN r.acquired_at
                               ELSE excluded.acquired_at END,
            reason = CASE WHEN r.expires_at > v_at THEN coalesce(excluded.reason, r.reason)
                          ELSE excluded.reason END,
            bead_id = CASE WHEN r.expires_at > v_at THEN coalesce(excluded.bead_id, r.bead_id)
                           ELSE excluded.bead_id END,
            -- (excluded.metadata is never NULL: the request's, as given.)
            metadata = CASE WHEN r.expires_at > v_at THEN coalesce(
                                (SELECT q.metadata FROM q
                                 WHERE q.project_id = r.project_id
                                   AND q.agent_id = r.holder_agent_id AND q.path = r.path),
                                r.metadata)
                            ELSE excluded.metadata END,
            holder_alias = excluded.holder_alias,
            exclusive = excluded.exclusive,
            expires_at = excluded.expires_at
        RETURNING r.project_id, r.holder_agent_id, r.id, r.path, r.exclusive, r.reason,
                  r.bead_id, r.acquired_at, r.expires_at, (r.xmax <> 0) AS updated
    ),
    done AS MATERIALIZED (
        SELECT i.*, q.n, q.call, q.alias, o.id AS old_id, o.exclusive AS old_exclusive,
               o.reason AS old_reason, o.bead_id AS old_bead_id,
               o.acquired_at AS old_acquired_at, o.expires_at AS old_expires_at,
               coalesce(i.updated AND o.expires_at > v_at, false) AS renewed
        FROM ins i
        JOIN q ON q.project_id = i.project_id AND q.agent_id = i.holder_agent_id
              AND q.path = i.path
        LEFT JOIN old o ON o.n = q.n
    ),
    ev AS (
        INSERT INTO events (project_id, type, recipients, payload)
        SELECT e.project_id, e.type, NULL, e.payload
        FROM (
            -- The expired row an upsert replaced, as it was ...
            SELECT d.n, 0 AS k, d.project_id, 'reservation.expired' AS type,
                   reservation_event_data(d.old_id, d.path, d.alias, d.holder_agent_id,
                                          d.old_exclusive, d.old_reason, d.old_bead_id,
                                          d.old_acquired_at, d.old_expires_at) AS payload
            FROM done d WHERE d.updated AND NOT d.renewed AND d.old_id IS NOT NULL
            UNION ALL
            -- ... then the grant or renewal, in the order of the request.
            SELECT d.n, 1, d.project_id,
                   CASE WHEN d.renewed THEN 'reservation.renewed' ELSE 'reservation.granted' END,
                   reservation_event_data(d.id, d.path, d.alias, d.holder_agent_id, d.exclusive,
                                          d.reason, d.bead_id, d.acquired_at, d.expires_at)
            FROM done d
        ) e
        ORDER BY e.n, e.k
        RETURNING events.seq, events.id, events.project_id, events.type, events.recipients,
                  events.payload, events.created_at
    ),
    -- Whose event is whose: by the reservation it names (a replaced row's
    -- old id, or the granted row's id).
    owner AS (
        SELECT d.id AS reservation_id, d.call FROM done d
        UNION ALL
        SELECT d.old_id, d.call FROM done d WHERE d.old_id <> d.id
    )
    SELECT h.call::int, 'conflict', h.requested, h.id, h.holder_agent_id, h.holder_alias,
           h.path, h.exclusive, h.reason, h.bead_id, h.acquired_at, h.expires_at, v_at,
           NULL::bigint, NULL::uuid, NULL::uuid, NULL::text, NULL::uuid[], NULL::jsonb,
           NULL::timestamptz
    FROM hit h
    UNION ALL
    SELECT o.call::int, 'event', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           v_at, ev.seq, ev.id, ev.project_id, ev.type, ev.recipients, ev.payload,
           ev.created_at
    FROM ev JOIN owner o ON o.reservation_id = (ev.payload->>'reservation_id')::uuid;
END
$$;

-- A batch of releases, p_batch one [project_id, agent_id, paths] per call,
-- in order: the callers' rows go and their events are stored; the live rows of other holders on
-- the same patterns (untouched by the DELETE) say "not_owner". Rows, each
-- with its ``call``: 'event' (ev_* columns as hub.services.events.returned
-- names them: reservation.released for a live row, reservation.expired for
-- one that had expired) and 'other' (``path``). Two calls of one batch
-- releasing the same row: one gets it, the other finds nothing, as if one
-- had run after the other.
CREATE FUNCTION reservation_release_batch(p_batch jsonb)
RETURNS TABLE (
    call int, kind text, path text,
    ev_seq bigint, ev_id uuid, ev_project_id uuid, ev_type text, ev_recipients uuid[],
    ev_payload jsonb, ev_created_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET enable_bitmapscan = off
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH u AS (
        SELECT x.call::int AS call, (x.v->>0)::uuid AS project_id, (x.v->>1)::uuid AS agent_id,
               p.path, row_number() OVER (ORDER BY x.call, p.i) AS n
        FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS x(v, call)
        CROSS JOIN LATERAL jsonb_array_elements_text(x.v->2) WITH ORDINALITY AS p(path, i)
    ),
    gone AS (
        DELETE FROM reservations r USING u
        WHERE r.project_id = u.project_id AND r.holder_agent_id = u.agent_id
          AND r.path = u.path
        RETURNING u.call, u.n, r.id, r.holder_agent_id, r.holder_alias, r.path, r.exclusive,
                  r.reason, r.bead_id, r.acquired_at, r.expires_at, r.project_id,
                  r.expires_at > now() AS live
    ),
    ev AS (
        INSERT INTO events (project_id, type, recipients, payload)
        SELECT g.project_id,
               CASE WHEN g.live THEN 'reservation.released' ELSE 'reservation.expired' END,
               NULL,
               reservation_event_data(g.id, g.path, g.holder_alias, g.holder_agent_id,
                                      g.exclusive, g.reason, g.bead_id, g.acquired_at,
                                      g.expires_at)
        FROM gone g
        ORDER BY g.n
        RETURNING events.seq, events.id, events.project_id, events.type, events.recipients,
                  events.payload, events.created_at
    )
    SELECT g.call, 'event', NULL::text,
           ev.seq, ev.id, ev.project_id, ev.type, ev.recipients, ev.payload, ev.created_at
    FROM ev JOIN gone g ON g.id = (ev.payload->>'reservation_id')::uuid
    UNION ALL
    SELECT u.call, 'other', u.path, NULL, NULL, NULL, NULL, NULL, NULL, NULL
    FROM u
    WHERE EXISTS (
        SELECT FROM reservations r
        WHERE r.project_id = u.project_id AND r.path = u.path
          AND r.holder_agent_id <> u.agent_id AND r.expires_at > now());
END
$$;
