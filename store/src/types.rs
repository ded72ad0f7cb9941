use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// What the writer believes about a stream before appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream holds.
    Any,
    /// The stream must not exist yet (its first event gets version 1).
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    /// Who caused it and why (actor, request id, ...); never personal data or secrets.
    pub metadata: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Version of the stream's last event after the append.
    pub version: u64,
    /// Global position of the last appended event.
    pub position: Position,
    /// True when every event was already stored (a retried append), so nothing new was written.
    pub idempotent: bool,
}

/// A place in the global order: `(tx, seq)` compared lexicographically. On Postgres `tx` is the
/// writing transaction's id, on SQLite it is always 0 (a single writer commits in sequence order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub tx: i64,
    pub seq: i64,
}

impl Position {
    pub const START: Position = Position { tx: 0, seq: 0 };
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.tx, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: Position,
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: u64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Postgres pool size (SQLite uses one writer and this many readers).
    pub max_connections: u32,
    /// SQLite `synchronous` level: FULL (default) survives power loss, NORMAL survives a crash.
    pub sqlite_synchronous_full: bool,
}

impl StoreOptions {
    pub fn durable() -> Self {
        Self { max_connections: 8, sqlite_synchronous_full: true }
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("stream {stream_id} is at version {actual}, expected {expected:?}")]
    WrongExpectedVersion { stream_id: String, expected: ExpectedVersion, actual: u64 },
    #[error("event {event_id} is already stored with different content or in another stream")]
    DuplicateEventId { event_id: Uuid },
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                Self::Unavailable(e.to_string())
            }
            other => Self::Database(other),
        }
    }
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Database(sqlx::Error::Database(db)) => {
                let postgres = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some();
                db.code().is_some_and(|code| if postgres { postgres_transient(&code) } else { sqlite_transient(&code) })
            }
            _ => false,
        }
    }
}

// Error codes that say "not now" rather than "never": contention, and storage that is full,
// read-only or failing (writes work again once an operator frees space or remounts).

/// SQLite: BUSY, LOCKED, READONLY, IOERR, FULL, in any extended variant.
fn sqlite_transient(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|extended| matches!(extended & 0xff, 5 | 6 | 8 | 10 | 13))
}

/// Postgres SQLSTATE: connection exceptions (08), insufficient resources such as a full disk
/// (53), operator intervention such as a shutdown (57P), read-only transaction, serialization
/// failure, deadlock.
fn postgres_transient(code: &str) -> bool {
    ["08", "53", "57P"].iter().any(|class| code.starts_with(class)) || matches!(code, "25006" | "40001" | "40P01")
}

#[cfg(test)]
mod tests {
    use super::{postgres_transient, sqlite_transient};

    #[test]
    fn full_read_only_and_failing_storage_is_transient_but_bad_sql_is_not() {
        for code in ["5", "517", "13", "8", "1032", "778"] {
            assert!(sqlite_transient(code), "SQLite {code}");
        }
        for code in ["1", "19", "2067"] {
            assert!(!sqlite_transient(code), "SQLite {code}");
        }
        for code in ["53100", "57P01", "08006", "25006", "40001", "40P01"] {
            assert!(postgres_transient(code), "Postgres {code}");
        }
        for code in ["23505", "42P01", "22P02"] {
            assert!(!postgres_transient(code), "Postgres {code}");
        }
    }
}
