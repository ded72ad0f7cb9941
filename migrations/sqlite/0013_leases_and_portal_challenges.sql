-- Several nodes on one database (issue 19). SQLite is one node: its leases are always held by
-- the process (store/src/leases.rs), so the table exists only to keep both schemas alike.
CREATE TABLE leases (
    role       TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    term       BIGINT NOT NULL
);

-- Portal sign-in challenges: only a MAC of the code is kept; guesses are counted by the
-- database (one atomic update per guess). Times are Unix ms.
CREATE TABLE portal_challenges (
    challenge_id TEXT    PRIMARY KEY,
    license_key  TEXT    NOT NULL,
    code_tag     TEXT    NOT NULL,
    matched      INTEGER NOT NULL DEFAULT 0,
    guesses      INTEGER NOT NULL DEFAULT 0,
    expires_at   BIGINT  NOT NULL
);
CREATE INDEX portal_challenges_expiry ON portal_challenges (expires_at);
