-- When a protected file's bytes may leave the blob store, decided by every node sharing the
-- database (api/src/files/gc.rs). Identical DDL on both backends. Times are Unix ms.

-- One row per app whose blobs were ever guarded. Registering an upload and claiming the app for
-- a removal both lock this row first (an upsert), so the two are serialized per app on every
-- backend; `removing_until` is the claim of the node removing bytes (a lease: a node that dies
-- while removing holds the app back until it expires).
CREATE TABLE blob_gc_apps (
    app_id         TEXT   PRIMARY KEY,
    removing_node  TEXT   NOT NULL,
    removing_until BIGINT NOT NULL
);

-- Uploads between registering (before their first byte is stored) and their version being shown
-- by the uploading node's model. `done` = 1 once recorded at (`position_tx`, `position_seq`): a
-- node whose model has not reached that position cannot see the version yet, so it may not
-- remove bytes of the app either. Renewed while the upload runs; an expired row (its node died)
-- no longer holds anything back.
CREATE TABLE blob_uploads_in_flight (
    upload_id    TEXT   PRIMARY KEY,
    app_id       TEXT   NOT NULL,
    node         TEXT   NOT NULL,
    done         BIGINT NOT NULL,
    position_tx  BIGINT NOT NULL,
    position_seq BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX blob_uploads_in_flight_by_app ON blob_uploads_in_flight (app_id, expires_at);

-- Bytes whose file was deleted (at log position `position_tx`, `position_seq`) and that have not
-- been removed yet: the removal waits for uploads of the app in flight, or was cut off by the
-- process ending. Every node's sweep removes those no live version names.
CREATE TABLE blob_pending_removals (
    app_id       TEXT   NOT NULL,
    storage_key  TEXT   NOT NULL,
    position_tx  BIGINT NOT NULL,
    position_seq BIGINT NOT NULL,
    PRIMARY KEY (app_id, storage_key, position_tx, position_seq)
);
