use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
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
    /// Personal data the events refer to, written in the same transaction (and savepoint) as
    /// the events: an append that fails leaves none of it behind.
    pub pii: Vec<PiiRow>,
}

impl AppendRequest {
    pub fn new(stream_id: impl Into<String>, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self { stream_id: stream_id.into(), expected, events, pii: Vec::new() }
    }

    pub fn with_pii(mut self, pii: Vec<PiiRow>) -> Self {
        self.pii = pii;
        self
    }
}

/// How this store's append batches went: all requests in one statement each, or (something
/// stood in the way) one request at a time. For `/metrics` and for tests of the fast path.
#[derive(Debug, Default)]
pub struct AppendPaths {
    pub together: std::sync::atomic::AtomicU64,
    pub one_by_one: std::sync::atomic::AtomicU64,
}

/// An append request made ready for the database: payload and metadata already JSON text, the
/// event id already in its text form. Encoding is the caller's work, done on its own task before
/// the request joins a batch, so the one writer spends its time on the database alone.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<EncodedEvent>,
    pub pii: Vec<PiiRow>,
}

/// A [`NewEvent`] encoded for either backend.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    pub event_id: Uuid,
    /// `event_id` hyphenated: how SQLite stores it.
    pub event_id_text: String,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: String,
    pub metadata: String,
}

impl AppendRequest {
    /// Encodes the events (see [`EncodedAppend`]).
    pub fn encode(self) -> EncodedAppend {
        let events = self.events.into_iter().map(EncodedEvent::from).collect();
        EncodedAppend { stream_id: self.stream_id, expected: self.expected, events, pii: self.pii }
    }
}

impl From<NewEvent> for EncodedEvent {
    fn from(event: NewEvent) -> Self {
        Self {
            event_id: event.event_id,
            event_id_text: event.event_id.hyphenated().to_string(),
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.payload.to_string(),
            metadata: event.metadata.to_string(),
        }
    }
}

/// One field of the PII vault (`pii` table), already sealed by the caller; an existing value of
/// the same subject and field is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiiRow {
    pub subject: String,
    pub field: String,
    pub sealed: String,
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

/// An event as read back. Payload and metadata stay the stored JSON text (validated, not parsed
/// into a tree): readers decode the payload straight into their typed event
/// (`licensd_domain::decode_event`), so a read costs one parse, not a `Value` and then a second pass.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub position: Position,
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: u64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Box<RawValue>,
    pub metadata: Box<RawValue>,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The payload as a JSON tree, for tools and tests that inspect it loosely.
    pub fn payload_json(&self) -> serde_json::Value {
        json_tree(&self.payload)
    }

    /// The metadata as a JSON tree.
    pub fn metadata_json(&self) -> serde_json::Value {
        json_tree(&self.metadata)
    }

    /// The metadata fields readers use, borrowed from the stored text where it has no escapes.
    /// Metadata not of that shape reads as empty.
    pub fn metadata_fields(&self) -> EventMetadata<'_> {
        serde_json::from_str(self.metadata.get()).unwrap_or_default()
    }
}

/// Who caused an event and in which account, as written by the command layer.
#[derive(Debug, Default, Deserialize)]
pub struct EventMetadata<'a> {
    #[serde(borrow)]
    pub actor: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub account_id: Option<std::borrow::Cow<'a, str>>,
}

/// Equal when every field is, JSON compared as stored text.
impl PartialEq for RecordedEvent {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position
            && self.event_id == other.event_id
            && self.stream_id == other.stream_id
            && self.version == other.version
            && self.event_type == other.event_type
            && self.schema_version == other.schema_version
            && self.payload.get() == other.payload.get()
            && self.metadata.get() == other.metadata.get()
            && self.recorded_at == other.recorded_at
    }
}

/// A JSON tree as stored text (for building a [`RecordedEvent`] in tests and tools).
pub fn raw_json(value: &serde_json::Value) -> Box<RawValue> {
    // Serialising a `Value` cannot fail (its map keys are strings).
    serde_json::value::to_raw_value(value).unwrap_or_default()
}

/// Raw JSON is valid by construction, so parsing it into a tree cannot fail.
fn json_tree(raw: &RawValue) -> serde_json::Value {
    serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null)
}

#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Postgres pool size (SQLite uses one writer and this many readers).
    pub max_connections: u32,
    /// SQLite `synchronous` level: FULL (default) survives power loss, NORMAL survives a crash.
    pub sqlite_synchronous_full: bool,
    /// Postgres: how long the outcome of a commit whose connection broke is looked up before
    /// the append is answered [`StoreError::CommitUnknown`].
    pub commit_settle: std::time::Duration,
    /// Postgres: how long one of this process's sessions may sit inside a transaction waiting
    /// for the process before the server ends it (`idle_in_transaction_session_timeout`; zero
    /// leaves the server's setting). Every node reads the log only below the oldest transaction
    /// still open anywhere in the cluster, so a process frozen between `BEGIN` and `COMMIT` (a
    /// paused VM, a SIGSTOP) would otherwise hold back every node's reads for as long as it stays
    /// frozen. Our own transactions never wait on anything but the database between statements.
    pub idle_in_transaction: std::time::Duration,
}

impl StoreOptions {
    /// Default of [`Self::commit_settle`].
    pub const COMMIT_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);
    /// Default of [`Self::idle_in_transaction`].
    pub const IDLE_IN_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(10);

    pub fn durable() -> Self {
        Self {
            max_connections: 8,
            sqlite_synchronous_full: true,
            commit_settle: Self::COMMIT_SETTLE,
            idle_in_transaction: Self::IDLE_IN_TRANSACTION,
        }
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
    /// The database refused a value of this request (Postgres SQLSTATE class 22 or 23, SQLite
    /// constraint or size errors), e.g. a NUL character. The request's own fault: retrying the
    /// same values fails the same way. The text is the database's, for logs only.
    #[error("the database refused a value of the request: {0}")]
    InvalidData(String),
    /// The connection was lost while the commit was in flight and the store could not find out
    /// whether it took effect. Retrying with the same event ids is safe (`UNIQUE(event_id)`).
    #[error("the connection was lost during commit and the outcome is unknown: {0}")]
    CommitUnknown(String),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                Self::Unavailable(e.to_string())
            }
            // A value the database refuses is the caller's fault on any path (reads too).
            other if is_data_error(&other) => Self::InvalidData(other.to_string()),
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

/// Whether the database refused a value rather than failed: retrying cannot help, and the
/// rest of a batch is unaffected. Unique violations of the event log are not data errors:
/// the append algorithm turns them into version conflicts or idempotent retries.
fn is_data_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Encode(_) => true,
        sqlx::Error::Database(db) => {
            let postgres = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some();
            db.code().is_some_and(|code| if postgres { postgres_data_error(&code) } else { sqlite_data_error(&code) })
        }
        _ => false,
    }
}

/// Postgres SQLSTATE class 22 (data exception: 22P05 untranslatable character, 22021 bad byte
/// sequence, 22001 too long, ...) and class 23 (integrity constraint violation).
fn postgres_data_error(code: &str) -> bool {
    code.starts_with("22") || code.starts_with("23")
}

/// SQLite: CONSTRAINT (19, any extended variant, the `events_refuse_nul` trigger's included),
/// TOOBIG (18), MISMATCH (20), RANGE (25).
fn sqlite_data_error(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|extended| matches!(extended & 0xff, 18 | 19 | 20 | 25))
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
    use super::{postgres_data_error, postgres_transient, sqlite_data_error, sqlite_transient};

    #[test]
    fn refused_values_are_data_errors_but_outages_and_bad_sql_are_not() {
        for code in ["22P05", "22021", "22001", "23502", "23514", "23505"] {
            assert!(postgres_data_error(code), "Postgres {code}");
        }
        for code in ["08006", "57P01", "42P01", "40001", "53100"] {
            assert!(!postgres_data_error(code), "Postgres {code}");
        }
        for code in ["19", "1811", "2067", "275", "18", "20", "25"] {
            assert!(sqlite_data_error(code), "SQLite {code}");
        }
        for code in ["1", "5", "13", "778", "8"] {
            assert!(!sqlite_data_error(code), "SQLite {code}");
        }
    }

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

/// Which page of a stream [`crate::EventStore::read_stream_page`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPage {
    /// The version the page starts after (exclusive); `None`: the stream's first event
    /// (forwards) or its last (backwards).
    pub from: Option<u64>,
    /// Newest first (versions below `from`), instead of oldest first (versions above it).
    pub backwards: bool,
    pub limit: usize,
}

impl StreamPage {
    /// The SQL condition and order of the page, for `version` compared with `$2` and `LIMIT $3`.
    pub(crate) fn sql(&self) -> (&'static str, i64, i64) {
        let limit = i64::try_from(self.limit).unwrap_or(i64::MAX);
        let from = self.from.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        if self.backwards {
            ("version < $2 ORDER BY version DESC", from.unwrap_or(i64::MAX), limit)
        } else {
            ("version > $2 ORDER BY version", from.unwrap_or(-1), limit)
        }
    }
}
