-- Reservations are written on every acquire and release, and their foreign
-- keys made every concurrent request KEY SHARE-lock the same project and
-- agent rows (as for mail in 0007). Agents are only soft-deleted (deleting
-- a workspace releases its reservations), and deleting a project deletes
-- them explicitly (hub.services.projects.delete).
ALTER TABLE reservations DROP CONSTRAINT IF EXISTS reservations_project_id_fkey;
ALTER TABLE reservations DROP CONSTRAINT IF EXISTS reservations_holder_agent_id_fkey;
