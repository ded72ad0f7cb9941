-- The Kafka relay's checkpoint (issue 19): the position (tx, seq) of the last event the broker
-- acknowledged, per topic, so a relay that takes the role over resumes after it and a changed
-- topic starts from the beginning of the log. The relay moves it only forward, and only after
-- the broker acknowledged every event up to it.
CREATE TABLE kafka_relay (
    topic        TEXT   PRIMARY KEY,
    tx           BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    -- Unix ms of the database's clock at the last move (the relay's lag, in /metrics).
    moved_at     BIGINT NOT NULL
);
