-- Delivery counters of protected files (projections/src/file_counters.rs): one row per app and
-- file name, updated once per finished or interrupted transfer (never per chunk, and not in the
-- event log). Times are Unix ms. Identical DDL on both backends.
CREATE TABLE file_transfers (
    app_id              TEXT   NOT NULL,
    name                TEXT   NOT NULL,
    transfer_count      BIGINT NOT NULL,
    bytes_served        BIGINT NOT NULL,
    last_transferred_at BIGINT,
    last_version        BIGINT,
    PRIMARY KEY (app_id, name)
);
