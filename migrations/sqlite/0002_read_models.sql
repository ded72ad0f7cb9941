-- Read models projected from the event log (projections crate). Rebuildable from zero at any time.

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
