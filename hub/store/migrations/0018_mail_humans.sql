-- mail_send_batch (0012) again, with one change: a message to_all goes to
-- every other *agent*; the inbox rows of humans (agents whose alias is
-- human:<name>, hub.services.humans) receive only what names them.

CREATE OR REPLACE FUNCTION mail_send_batch(p_batch jsonb)
RETURNS TABLE (
    created_at timestamptz, thread_ok boolean, ids uuid[], aliases text[],
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
        SELECT q.*, x.ids, x.aliases,
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
                   array(SELECT jsonb_array_elements_text(u.v->10)::uuid) AS want_ids
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
              -- part of "everyone".
              AND NOT (q.to_all AND a.alias LIKE 'human:%')
        ) x
    ), m AS (
        INSERT INTO mail_messages
            (id, project_id, from_agent_id, from_alias, subject, body, priority, thread_id)
        SELECT id, project_id, from_id, from_alias, subject, body, priority,
               coalesce(thread_id, id)
        FROM q
        WHERE thread_ok AND cardinality(ids) > 0
          AND want_aliases <@ aliases AND want_ids <@ ids
        RETURNING id, created_at
    ), mq AS MATERIALIZED (
        SELECT q.*, m.created_at FROM q JOIN m ON m.id = q.id
    ), d AS (
        INSERT INTO mail_deliveries (message_id, recipient_id, project_id, created_at)
        SELECT mq.id, r, mq.project_id, mq.created_at FROM mq, unnest(mq.ids) r
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
                   'created_at', wire_time(created_at))
        FROM mq ORDER BY i
        RETURNING seq, id, project_id, type, recipients, payload, created_at
    )
    SELECT mq.created_at, q.thread_ok, q.ids, q.aliases,
           ev.seq, ev.id, ev.project_id, ev.type, ev.recipients, ev.payload, ev.created_at
    FROM q
    LEFT JOIN mq ON mq.i = q.i
    LEFT JOIN ev ON (ev.payload->>'message_id')::uuid = q.id
    ORDER BY q.i;
END
$fn$;
