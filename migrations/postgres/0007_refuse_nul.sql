-- Postgres refuses a NUL character in text (SQLSTATE 22021) and jsonb (22P05) by itself; SQLite
-- gets a trigger in its 0007 to refuse it in stream ids and event types too. Nothing to change.
SELECT 1;
