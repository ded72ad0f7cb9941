-- Dashboard sign-in lockout, outside the event log so a restart keeps it (commands/src/lockout.rs).
-- One row per subject (a keyed digest of the sign-in email, never the address); times are Unix
-- milliseconds. Counted by one atomic upsert before each password check. Identical on both backends.
CREATE TABLE dashboard_lockouts (
    subject      TEXT   PRIMARY KEY,
    -- Attempts in the current round (counted before verification, cleared by a success).
    failures     BIGINT NOT NULL,
    -- Locks so far: the next lasts base * 2^lockouts, capped.
    lockouts     BIGINT NOT NULL,
    -- 0 when no lock is running or pending.
    locked_until BIGINT NOT NULL,
    last_attempt BIGINT NOT NULL
);
