-- What file delivery must remember beyond one process (api/src/live/files/quota.rs, tokens.rs),
-- so a restart or another node sharing the database sees it. Identical DDL on both backends.

-- Bytes each identity of an app was granted per UTC day (the daily quota). A transfer leases
-- allowance in blocks with one statement (`granted` is what that statement granted) and gives
-- back what it did not send; `identity` is the SHA-256 (hex) of the license, app user or client.
CREATE TABLE file_quota_usage (
    app_id   TEXT   NOT NULL,
    identity TEXT   NOT NULL,
    day      BIGINT NOT NULL,
    used     BIGINT NOT NULL,
    granted  BIGINT NOT NULL,
    PRIMARY KEY (app_id, identity, day)
);

-- Outstanding single-use download URLs (URL mode). Redeeming deletes the row in the same
-- statement that reads it. The token itself is never stored, only its SHA-256 (hex); `node` is
-- the process that issued it (its sessions live in that process only). Times are Unix ms.
CREATE TABLE file_download_tokens (
    token_digest TEXT   PRIMARY KEY,
    node         TEXT   NOT NULL,
    session_id   TEXT   NOT NULL,
    app_id       TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    version      BIGINT NOT NULL,
    size         BIGINT NOT NULL,
    sha256       TEXT   NOT NULL,
    storage_key  TEXT   NOT NULL,
    identity     TEXT   NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX file_download_tokens_by_expiry ON file_download_tokens (expires_at);
