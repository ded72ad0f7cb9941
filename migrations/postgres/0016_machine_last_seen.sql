-- When each bound machine last logged in (projection `license_machines`, version 2: its replay
-- fills the column from the validations already in the log). Identical DDL on both backends.
ALTER TABLE rm_license_machines ADD COLUMN last_seen_at TEXT;
