-- The master keyring (`licensd rotate-master-key`). Row N is sealed under key N and holds every
-- older key, so the newest key opens the whole ring and an older key opens no newer row.
-- No row: the database was never rotated and its one key is key 0. Identical DDL on both backends.
CREATE TABLE master_keyring (
    key_id     BIGINT PRIMARY KEY,
    sealed     TEXT   NOT NULL,
    -- Unix milliseconds.
    created_at BIGINT NOT NULL
);
