-- Postgres refuses a NUL character in a text column (SQLSTATE 22021); SQLite would store it and
-- then truncate it in some string functions. Refusing it here too keeps stream ids and event
-- types portable between the backends, and gives both the same data error for such a request.
-- (NUL inside a JSON string is stored escaped as \u0000 and reads back intact on SQLite.)
CREATE TRIGGER events_refuse_nul BEFORE INSERT ON events
WHEN instr(CAST(NEW.stream_id AS BLOB), x'00') > 0 OR instr(CAST(NEW.event_type AS BLOB), x'00') > 0
BEGIN
    SELECT RAISE(ABORT, 'a NUL character in stream_id or event_type');
END;
