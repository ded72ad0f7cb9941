-- Dashboard data (issue 20). Identical DDL on both backends (SQLite: the read-model file).

-- The keyed index of each license's buyer email (projection `licenses`, version 2: its replay
-- fills the column from the `BuyerEmailSet` events that carry the digest). The address itself
-- stays sealed in the PII vault.
ALTER TABLE rm_licenses ADD COLUMN email_digest TEXT;
CREATE INDEX rm_licenses_by_email ON rm_licenses (app_id, email_digest);

-- When each machine last sent a heartbeat (heartbeats are not events: every node notes them in
-- memory and writes the latest here every LICENSD_PRESENCE_FLUSH_MS). Not a read model: a
-- rebuild keeps it; the license page shows the later of this and the last validation.
CREATE TABLE machine_heartbeats (
    license_key  TEXT NOT NULL,
    hwid         TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    PRIMARY KEY (license_key, hwid)
);

-- Live sessions each node holds per app, rewritten by the node every LICENSD_PRESENCE_FLUSH_MS;
-- the overview sums the rows written within three intervals (a stopped node's rows go stale).
CREATE TABLE live_session_counts (
    node       TEXT   NOT NULL,
    app_id     TEXT   NOT NULL,
    sessions   BIGINT NOT NULL,
    updated_at TEXT   NOT NULL,
    PRIMARY KEY (node, app_id)
);

-- Revenue (projection `usage_rollup`, version 2: its replay fills both tables from the log).
-- Each purchase or renewal received, with what was paid (NULL: the payload, or an event recorded
-- before amounts were, said nothing), until its fulfilment names the app it paid for.
CREATE TABLE rm_usage_payments (
    stream_id    TEXT   PRIMARY KEY,
    account_id   TEXT   NOT NULL,
    currency     TEXT,
    amount_minor BIGINT,
    counted      BIGINT NOT NULL
);

-- Fulfilled payments per app, UTC day and currency (minor units); currency '' counts the
-- purchases of unknown amount (never added as 0).
CREATE TABLE rm_usage_revenue (
    app_id       TEXT   NOT NULL,
    day          TEXT   NOT NULL,
    currency     TEXT   NOT NULL,
    account_id   TEXT   NOT NULL,
    amount_minor BIGINT NOT NULL,
    purchases    BIGINT NOT NULL,
    PRIMARY KEY (app_id, day, currency)
);
CREATE INDEX rm_usage_revenue_by_account ON rm_usage_revenue (account_id, day);
