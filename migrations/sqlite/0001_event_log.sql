-- The append-only event log. One writer commits in order, so `position` is the global order.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version > 0),
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- Where each persisted projection has got to; updated in the same transaction as its rows.
CREATE TABLE projection_checkpoints (
    name    TEXT    PRIMARY KEY,
    version INTEGER NOT NULL,
    tx      INTEGER NOT NULL,
    seq     INTEGER NOT NULL
);

-- Personal data lives here, sealed with the master key, never in events: erasure deletes rows.
CREATE TABLE pii (
    subject TEXT NOT NULL,
    field   TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (subject, field)
);
