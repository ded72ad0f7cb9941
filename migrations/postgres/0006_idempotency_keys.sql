-- Answers to Developer API writes sent with an `Idempotency-Key`, kept for replay. A row is
-- claimed (status NULL) before the request runs and completed with its answer afterwards, so a
-- concurrent request with the same key finds the claim. Identical DDL on both backends.

CREATE TABLE idempotency_keys (
    account_id   TEXT   NOT NULL,
    idem_key     TEXT   NOT NULL,
    -- SHA-256 of method, path and body: another request under the same key is a conflict.
    request_hash TEXT   NOT NULL,
    -- NULL while the first request is in flight.
    status       BIGINT,
    content_type TEXT,
    body         TEXT,
    -- Unix milliseconds; rows older than LICENSD_IDEMPOTENCY_TTL_SECS are ignored and purged.
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (account_id, idem_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
