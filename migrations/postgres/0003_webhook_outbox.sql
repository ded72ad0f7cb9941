-- Webhook delivery, owned by the `webhook_outbox` projection (subscriptions and license apps, as of
-- each event) and the delivery worker (attempt bookkeeping). Identical DDL on both backends.

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
