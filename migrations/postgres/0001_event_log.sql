-- The append-only event log. Positions come from a sequence, but transactions commit out of
-- order: tx_id lets readers wait until every older transaction has finished (see postgres.rs).
CREATE TABLE events (
    position       BIGSERIAL   PRIMARY KEY,
    tx_id          BIGINT      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    event_id       UUID        NOT NULL,
    stream_id      TEXT        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version > 0),
    event_type     TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    payload        JSONB       NOT NULL,
    metadata       JSONB       NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);
CREATE INDEX events_global_order ON events (tx_id, position);

CREATE TABLE projection_checkpoints (
    name    TEXT    PRIMARY KEY,
    version INTEGER NOT NULL,
    tx      BIGINT  NOT NULL,
    seq     BIGINT  NOT NULL
);

CREATE TABLE pii (
    subject TEXT NOT NULL,
    field   TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (subject, field)
);
