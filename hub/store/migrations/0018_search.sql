-- Full-text search over mail, chat, escalations and issues (search.query).
--
-- Expression indexes, not stored tsvector columns or triggers: a mail or
-- chat insert only adds its GIN entry (GIN's pending list makes that a
-- cheap append), with no extra statement and no wider heap row. The
-- queries in hub/services/search.py repeat these expressions exactly, so
-- the planner matches them to the indexes. 'english' stems ("failing"
-- finds "fails"); the config is spelled out because to_tsvector is only
-- immutable, and so indexable, with an explicit one.
CREATE INDEX mail_messages_search ON mail_messages
    USING gin (to_tsvector('english'::regconfig, subject || ' ' || body));
CREATE INDEX chat_messages_search ON chat_messages
    USING gin (to_tsvector('english'::regconfig, body));
CREATE INDEX escalations_search ON escalations
    USING gin (to_tsvector('english'::regconfig,
                           subject || ' ' || situation || ' ' || coalesce(response, '')));
CREATE INDEX beads_issues_search ON beads_issues
    USING gin (to_tsvector('english'::regconfig,
                           bead_id || ' ' || title || ' ' || coalesce(raw->>'description', '')));
