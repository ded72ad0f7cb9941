-- The commerce ledger's read models, owned by the `commerce_ledger` projection: one row per inbound
-- provider event (the event browser and the worker's queue), and the provider references each
-- fulfilled license answers to. Identical DDL on both backends.

CREATE TABLE rm_commerce_events (
    stream_id     TEXT   PRIMARY KEY,
    account_id    TEXT   NOT NULL,
    connection_id TEXT   NOT NULL,
    provider      TEXT   NOT NULL,
    external_id   TEXT   NOT NULL,
    event_type    TEXT   NOT NULL,
    status        TEXT   NOT NULL,
    -- The skip or held reason, and the last error text (never personal data).
    reason        TEXT,
    error         TEXT,
    attempts      BIGINT NOT NULL,
    retry_count   BIGINT NOT NULL,
    retry_at      TEXT,
    -- Licenses the event created or touched, comma-separated with leading and trailing commas.
    license_keys  TEXT   NOT NULL,
    redacted      BIGINT NOT NULL,
    received_at   TEXT   NOT NULL,
    updated_at    TEXT   NOT NULL
);
CREATE INDEX rm_commerce_events_by_account ON rm_commerce_events (account_id, received_at);
CREATE INDEX rm_commerce_events_due ON rm_commerce_events (status, retry_at);

CREATE TABLE rm_commerce_links (
    account_id  TEXT NOT NULL,
    provider    TEXT NOT NULL,
    ref         TEXT NOT NULL,
    license_key TEXT NOT NULL,
    app_id      TEXT NOT NULL,
    mapping_id  TEXT NOT NULL,
    PRIMARY KEY (account_id, provider, ref, license_key)
);
CREATE INDEX rm_commerce_links_by_license ON rm_commerce_links (license_key);
