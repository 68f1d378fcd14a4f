-- Issue 17, "nothing stays stuck": fencing tokens, wait queues and
-- idempotency keys (hub.services.leases, queues, idempotency).
--
-- Fencing tokens. Every grant of a claim or a reservation takes a value of
-- one sequence. Grants of one issue, or of overlapping paths, are decided
-- one after the other (the claim row, the reservation advisory locks), and
-- each takes its value after the previous grant committed, so per issue and
-- per path the token only increases. A renewal keeps its grant's token; an
-- expired row replaced by a new grant gets a new one. One sequence, not a
-- counter row per key: no extra statement or row lock on the hot path.
CREATE SEQUENCE fencing_tokens;
ALTER TABLE claims ADD COLUMN token bigint NOT NULL DEFAULT nextval('fencing_tokens');
ALTER TABLE reservations ADD COLUMN token bigint NOT NULL DEFAULT nextval('fencing_tokens');

-- Callers waiting in line for a path (kind 'reservation', key the pattern)
-- or an issue (kind 'claim', key the bead id), first come first served by
-- seq. Rows are inserted under the same locks that order the grants (the
-- reservation advisory locks; the claim's own advisory lock), so seq order
-- is arrival order. A row whose deadline passed no longer counts; the
-- waiting call removes its rows when it ends however it ends.
CREATE TABLE waiters (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    project_id  uuid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('reservation', 'claim')),
    key         text COLLATE "C" NOT NULL,
    agent_id    uuid NOT NULL,
    alias       text NOT NULL,
    exclusive   boolean NOT NULL DEFAULT true,
    instance_id text NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    deadline    timestamptz NOT NULL
);
CREATE INDEX waiters_line ON waiters (project_id, kind, seq);
CREATE INDEX waiters_deadline ON waiters (deadline);

-- Idempotency keys: the first answer of a state-changing call, per caller
-- (an agent id, or "human:<name>") and key. Written in the transaction of
-- the change itself, so a key is stored exactly when its change committed;
-- a concurrent repeat blocks on the uncommitted key row and then reads the
-- answer. Kept 24 hours.
CREATE TABLE idempotency_keys (
    project_id  uuid NOT NULL,
    principal   text NOT NULL,
    key         text NOT NULL,
    method      text NOT NULL,
    fingerprint text NOT NULL,
    response    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, principal, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- The batch functions of 0011, each event payload now with the grant's
-- ``token`` (and a renewal keeping it). Otherwise unchanged.
CREATE OR REPLACE FUNCTION reservation_acquire_batch(p_batch jsonb)
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
        SELECT q.n, r.id, r.exclusive, r.reason, r.bead_id, r.acquired_at, r.expires_at,
               r.token
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
            expires_at = excluded.expires_at,
            token = CASE WHEN r.expires_at > v_at THEN r.token ELSE excluded.token END
        RETURNING r.project_id, r.holder_agent_id, r.id, r.path, r.exclusive, r.reason,
                  r.bead_id, r.acquired_at, r.expires_at, r.token, (r.xmax <> 0) AS updated
    ),
    done AS MATERIALIZED (
        SELECT i.*, q.n, q.call, q.alias, o.id AS old_id, o.exclusive AS old_exclusive,
               o.reason AS old_reason, o.bead_id AS old_bead_id,
               o.acquired_at AS old_acquired_at, o.expires_at AS old_expires_at,
               o.token AS old_token,
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
                                          d.old_acquired_at, d.old_expires_at)
                   || jsonb_build_object('token', d.old_token) AS payload
            FROM done d WHERE d.updated AND NOT d.renewed AND d.old_id IS NOT NULL
            UNION ALL
            -- ... then the grant or renewal, in the order of the request.
            SELECT d.n, 1, d.project_id,
                   CASE WHEN d.renewed THEN 'reservation.renewed' ELSE 'reservation.granted' END,
                   reservation_event_data(d.id, d.path, d.alias, d.holder_agent_id, d.exclusive,
                                          d.reason, d.bead_id, d.acquired_at, d.expires_at)
                   || jsonb_build_object('token', d.token)
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
CREATE OR REPLACE FUNCTION reservation_release_batch(p_batch jsonb)
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
                  r.reason, r.bead_id, r.acquired_at, r.expires_at, r.project_id, r.token,
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
               || jsonb_build_object('token', g.token)
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
