-- The event log and mail are the hub's hottest inserts: every mail send
-- writes a message, a delivery per recipient and an event. Their foreign
-- keys to projects and agents cost about a third of PostgreSQL's CPU per
-- send, and every concurrent sender KEY SHARE-locks the same project and
-- agent rows (multixacts). The send statement itself resolves the sender
-- and the recipients from live agents in the same statement, agents are
-- only ever soft-deleted, and deleting a project deletes these rows
-- explicitly (hub.services.projects.delete), so the checks guard nothing
-- the code does not already ensure. A delivery and its message are
-- inserted by the same statement, and messages are only deleted with their
-- project, so that key goes too (its trigger was 15% of the statement).
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_project_id_fkey;
ALTER TABLE mail_messages DROP CONSTRAINT IF EXISTS mail_messages_project_id_fkey;
ALTER TABLE mail_messages DROP CONSTRAINT IF EXISTS mail_messages_from_agent_id_fkey;
ALTER TABLE mail_deliveries DROP CONSTRAINT IF EXISTS mail_deliveries_recipient_id_fkey;
ALTER TABLE mail_deliveries DROP CONSTRAINT IF EXISTS mail_deliveries_message_id_fkey;
