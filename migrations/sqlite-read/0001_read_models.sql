-- The read models' own file (licensd-read.db beside licensd.db): everything projected from the log,
-- written by the projections' connection, never by the event writer's. Attached to the log's
-- connections as `readmodels`, so queries name these tables unqualified. Rebuildable from the log,
-- except webhook_deliveries' attempt bookkeeping (copied over from licensd.db by its migration 0009).

-- Where each persisted projection has got to; updated in the same transaction as its rows.
CREATE TABLE projection_checkpoints (
    name    TEXT    PRIMARY KEY,
    version INTEGER NOT NULL,
    tx      INTEGER NOT NULL,
    seq     INTEGER NOT NULL
);

-- Licenses for listings and dashboards (the auth hot path reads from memory instead).
CREATE TABLE rm_licenses (
    license_key    TEXT   PRIMARY KEY,
    app_id         TEXT   NOT NULL,
    account_id     TEXT   NOT NULL,
    status         TEXT   NOT NULL,
    expires_at     TEXT,
    max_hwid_slots BIGINT NOT NULL,
    hwid_count     BIGINT NOT NULL,
    label          TEXT,
    created_at     TEXT   NOT NULL,
    updated_at     TEXT   NOT NULL
);
CREATE INDEX rm_licenses_by_app ON rm_licenses (app_id, created_at, license_key);

-- Every credit movement of an account, in log order.
CREATE TABLE rm_credit_ledger (
    pos_tx      BIGINT NOT NULL,
    pos_seq     BIGINT NOT NULL,
    account_id  TEXT   NOT NULL,
    delta       BIGINT NOT NULL,
    kind        TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    license_key TEXT,
    at          TEXT   NOT NULL,
    PRIMARY KEY (pos_tx, pos_seq)
);
CREATE INDEX rm_credit_ledger_by_account ON rm_credit_ledger (account_id, pos_tx, pos_seq);

-- Who changed what, when: one row per event that names an actor.
CREATE TABLE rm_audit_log (
    pos_tx     BIGINT NOT NULL,
    pos_seq    BIGINT NOT NULL,
    account_id TEXT,
    stream_id  TEXT   NOT NULL,
    event_type TEXT   NOT NULL,
    actor      TEXT   NOT NULL,
    at         TEXT   NOT NULL,
    PRIMARY KEY (pos_tx, pos_seq)
);
CREATE INDEX rm_audit_log_by_account ON rm_audit_log (account_id, pos_tx, pos_seq);

-- Webhook delivery (see migrations/sqlite/0003_webhook_outbox.sql).
CREATE TABLE wh_webhooks (
    webhook_id TEXT   PRIMARY KEY,
    app_id     TEXT   NOT NULL,
    url        TEXT   NOT NULL,
    -- Subscribed events, comma-separated with a leading and trailing comma (",a,b,").
    events     TEXT   NOT NULL,
    enabled    BIGINT NOT NULL,
    secret     TEXT   NOT NULL
);
CREATE INDEX wh_webhooks_by_app ON wh_webhooks (app_id);

CREATE TABLE wh_licenses (
    license_key TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL,
    status      TEXT NOT NULL
);

-- One row per (event, webhook). The id is derived from the event's log position, so replaying the
-- log never queues a delivery twice; a rebuild of the projection leaves this table alone.
CREATE TABLE webhook_deliveries (
    delivery_id     TEXT   PRIMARY KEY,
    webhook_id      TEXT   NOT NULL,
    event           TEXT   NOT NULL,
    body            TEXT   NOT NULL,
    created_at      TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at TEXT   NOT NULL,
    last_attempt_at TEXT,
    last_status     BIGINT,
    last_error      TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at);

-- The commerce ledger (see migrations/sqlite/0004_commerce.sql).
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
