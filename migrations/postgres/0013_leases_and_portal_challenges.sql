-- Several nodes on one database (issue 19).
--
-- leases: which node runs each single-owner role (the SQL read models' reader, the webhook
-- dispatcher, the commerce process manager). A node holds a role while its row names it and has
-- not expired; it renews well before expiry, and a survivor takes an expired row over. Times are
-- the database's clock (Unix ms), so the nodes' own clocks never decide an expiry. `term` grows
-- by one each time the role changes hands.
CREATE TABLE leases (
    role       TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    term       BIGINT NOT NULL
);

-- Portal sign-in challenges, shared by every node: a request for the code and the code's entry
-- may land on different nodes. Only a MAC of the code is kept; guesses are counted by the
-- database itself (one atomic update per guess). Times are Unix ms.
CREATE TABLE portal_challenges (
    challenge_id TEXT    PRIMARY KEY,
    license_key  TEXT    NOT NULL,
    code_tag     TEXT    NOT NULL,
    matched      INTEGER NOT NULL DEFAULT 0,
    guesses      INTEGER NOT NULL DEFAULT 0,
    expires_at   BIGINT  NOT NULL
);
CREATE INDEX portal_challenges_expiry ON portal_challenges (expires_at);
