-- Escalations' expiry is announced once (escalation.expired), by a timer
-- on the instance that created it or by the sweep of any instance; this
-- column records that it was, so the announcement is made exactly once
-- (a conditional UPDATE ... WHERE expiry_announced_at IS NULL).
ALTER TABLE escalations ADD COLUMN expiry_announced_at timestamptz;
CREATE INDEX escalations_unannounced ON escalations (expires_at)
    WHERE responded_at IS NULL AND expiry_announced_at IS NULL;
