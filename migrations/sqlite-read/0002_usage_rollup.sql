-- The daily roll-up behind GET /v1/overview (projection `usage_rollup`): per app and UTC day,
-- and per license and day for "top licenses". Rebuildable from the log.

-- Which app and account each license belongs to: billing events name neither app nor key, so
-- the roll-up keeps its own copy (written from LicenseCreated, in log order).
CREATE TABLE rm_usage_licenses (
    license_key TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL,
    account_id  TEXT NOT NULL
);

-- Counters of one app on one UTC day (`day` is YYYY-MM-DD).
CREATE TABLE rm_usage_daily (
    app_id          TEXT   NOT NULL,
    day             TEXT   NOT NULL,
    account_id      TEXT   NOT NULL,
    validations     BIGINT NOT NULL,
    heartbeats      BIGINT NOT NULL,
    credits_burned  BIGINT NOT NULL,
    new_licenses    BIGINT NOT NULL,
    commerce_events BIGINT NOT NULL,
    PRIMARY KEY (app_id, day)
);
CREATE INDEX rm_usage_daily_by_account ON rm_usage_daily (account_id, day);

-- Activity of one license on one UTC day.
CREATE TABLE rm_usage_license_daily (
    license_key TEXT   NOT NULL,
    day         TEXT   NOT NULL,
    app_id      TEXT   NOT NULL,
    account_id  TEXT   NOT NULL,
    validations BIGINT NOT NULL,
    heartbeats  BIGINT NOT NULL,
    PRIMARY KEY (license_key, day)
);
CREATE INDEX rm_usage_license_daily_by_app ON rm_usage_license_daily (app_id, day);
CREATE INDEX rm_usage_license_daily_by_account ON rm_usage_license_daily (account_id, day);

-- Machines bound to each license now, with when each was bound (projection `license_machines`).
CREATE TABLE rm_license_machines (
    license_key TEXT NOT NULL,
    hwid        TEXT NOT NULL,
    bound_at    TEXT NOT NULL,
    PRIMARY KEY (license_key, hwid)
);
