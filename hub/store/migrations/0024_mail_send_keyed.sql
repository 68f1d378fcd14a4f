-- mail_send_batch (0012, 0018) also takes a retry-safe send's idempotency key, so
-- a keyed send stays in group commit: one statement claims the key, writes
-- the message and stores its answer, all or nothing (hub.services.mail).
-- Before, every keyed call took a transaction of its own (claim, send,
-- answer, commit: four more round trips), and the MCP server and the
-- Python client key every send.
--
-- p_batch: as in 0012, each array with three more elements: [.., key,
-- principal, fingerprint], null for a send without a key. A keyed send is
-- written only if its key was claimed (new, or its row older than 24
-- hours, as hub.services.idempotency claims keys); otherwise nothing of it
-- is written and its row says key_taken: the caller then reads the stored
-- answer the slow way. The answer is built here, as mail.send builds it,
-- from the message's created_at (fixed in q, so the answer and the row
-- agree). Two sends of one batch with the same key make the statement fail
-- (ON CONFLICT cannot touch a row twice): group commit then writes each
-- alone.

DROP FUNCTION mail_send_batch(jsonb);

CREATE FUNCTION mail_send_batch(p_batch jsonb)
RETURNS TABLE (
    created_at timestamptz, thread_ok boolean, ids uuid[], aliases text[], key_taken boolean,
    ev_seq bigint, ev_id uuid, ev_project_id uuid, ev_type text, ev_recipients uuid[],
    ev_payload jsonb, ev_created_at timestamptz)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH q AS MATERIALIZED (
        SELECT s.*,
               s.thread_ok AND cardinality(s.ids) > 0
                   AND s.want_aliases <@ s.aliases AND s.want_ids <@ s.ids AS ok
        FROM (
            SELECT q.*, x.ids, x.aliases, clock_timestamp() AS at,
                   q.thread_id IS NULL OR EXISTS (
                       SELECT 1 FROM mail_messages t
                       WHERE t.project_id = q.project_id AND t.thread_id = q.thread_id
                   ) AS thread_ok
            FROM (
                SELECT u.i, (u.v->>0)::uuid AS id, (u.v->>1)::uuid AS project_id,
                       (u.v->>2)::uuid AS from_id, u.v->>3 AS from_alias, u.v->>4 AS subject,
                       u.v->>5 AS body, u.v->>6 AS priority, (u.v->>7)::uuid AS thread_id,
                       (u.v->8)::boolean AS to_all,
                       array(SELECT jsonb_array_elements_text(u.v->9)) AS want_aliases,
                       array(SELECT jsonb_array_elements_text(u.v->10)::uuid) AS want_ids,
                       u.v->>11 AS key, u.v->>12 AS principal, u.v->>13 AS fingerprint
                FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS u(v, i)
            ) q
            CROSS JOIN LATERAL (
                -- Aggregated per message, so the plan looks the agents up for
                -- each message instead of joining whole tables.
                SELECT coalesce(array_agg(a.id ORDER BY a.alias), '{}') AS ids,
                       coalesce(array_agg(a.alias ORDER BY a.alias), '{}') AS aliases
                FROM agents a
                WHERE a.project_id = q.project_id AND a.deleted_at IS NULL
                  AND (q.to_all OR a.alias = ANY(q.want_aliases) OR a.id = ANY(q.want_ids))
                  AND NOT (q.to_all AND a.id IS NOT DISTINCT FROM q.from_id)
                  -- Humans' inbox rows (hub.services.humans) are named, never
                  -- part of "everyone" (0018).
                  AND NOT (q.to_all AND a.alias LIKE 'human:%')
            ) x
        ) s
    ), k AS (
        INSERT INTO idempotency_keys AS k
            (project_id, principal, key, method, fingerprint, response)
        SELECT project_id, principal, key, 'mail.send', fingerprint, jsonb_build_object(
                   'message_id', id,
                   'thread_id', coalesce(thread_id, id),
                   'status', 'delivered',
                   'delivered_at', wire_time(at),
                   'created_at', wire_time(at),
                   'to', to_jsonb(aliases),
                   'recipients', cardinality(ids))
        FROM q WHERE key IS NOT NULL AND ok
        ON CONFLICT (project_id, principal, key) DO UPDATE
            SET method = excluded.method, fingerprint = excluded.fingerprint,
                response = excluded.response, created_at = now()
            WHERE k.created_at <= now() - interval '24 hours'
        RETURNING k.project_id, k.principal, k.key
    ), w AS MATERIALIZED (
        -- What is written: the valid sends without a key or with a claimed one.
        SELECT q.* FROM q
        WHERE ok AND (key IS NULL OR EXISTS (
            SELECT 1 FROM k
            WHERE k.project_id = q.project_id AND k.principal = q.principal AND k.key = q.key))
    ), m AS (
        INSERT INTO mail_messages
            (id, project_id, from_agent_id, from_alias, subject, body, priority, thread_id,
             created_at)
        SELECT id, project_id, from_id, from_alias, subject, body, priority,
               coalesce(thread_id, id), at
        FROM w
        RETURNING id
    ), d AS (
        INSERT INTO mail_deliveries (message_id, recipient_id, project_id, created_at)
        SELECT w.id, r, w.project_id, w.at FROM w, unnest(w.ids) r
    ), ev AS (
        -- The payload of hub.services.mail's `mail` event.
        INSERT INTO events (project_id, type, recipients, payload)
        SELECT project_id, 'mail', ids, jsonb_build_object(
                   'message_id', id,
                   'thread_id', coalesce(thread_id, id),
                   'from_agent_id', from_id,
                   'from_alias', from_alias,
                   'to', aliases,
                   'to_all', to_all,
                   'subject', subject,
                   'body', body,
                   'priority', priority,
                   'created_at', wire_time(at))
        FROM w ORDER BY i
        RETURNING seq, id, project_id, type, recipients, payload, created_at
    )
    SELECT w.at, q.thread_ok, q.ids, q.aliases,
           q.key IS NOT NULL AND q.ok AND w.id IS NULL,
           ev.seq, ev.id, ev.project_id, ev.type, ev.recipients, ev.payload, ev.created_at
    FROM q
    LEFT JOIN w ON w.i = q.i
    LEFT JOIN ev ON (ev.payload->>'message_id')::uuid = q.id
    ORDER BY q.i;
END
$fn$;
