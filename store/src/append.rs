//! The append algorithm, written once over a small transaction trait both backends implement.

use crate::{AppendRequest, AppendResult, ExpectedVersion, NewEvent, PiiRow, Position, StoreError};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::future::Future;
use uuid::Uuid;

/// SQL both backends share; each adds its own `RETURNING` and column types.
pub(crate) const STREAM_VERSION_SQL: &str = "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1";
macro_rules! insert_event_sql {
    ($returning:literal) => {
        concat!(
            "INSERT INTO events (event_id, stream_id, version, event_type, schema_version, payload, metadata, ",
            "recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            $returning
        )
    };
}
pub(crate) use insert_event_sql;

/// A stored event's identity, as far as the idempotency check needs it.
pub(crate) struct StoredId {
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: u64,
    pub position: Position,
}

/// The head of a multi-row insert; rows follow as `VALUES (...), (...)` in column order.
pub(crate) const INSERT_EVENTS: &str =
    "INSERT INTO events (event_id, stream_id, version, event_type, schema_version, payload, metadata, recorded_at) ";

/// One event row of a multi-row insert.
pub(crate) struct EventRow<'a> {
    pub stream_id: &'a str,
    pub version: u64,
    pub event: &'a NewEvent,
}

/// Writes one sealed PII field (both backends share the SQL).
pub const UPSERT_PII: &str = "INSERT INTO pii (subject, field, value) VALUES ($1, $2, $3) \
                                     ON CONFLICT (subject, field) DO UPDATE SET value = excluded.value";

/// Rows per multi-row `INSERT` (8 parameters each, well under either backend's limit).
pub(crate) const ROWS_PER_INSERT: usize = 1000;

/// The statements the append algorithm needs inside one open write transaction.
pub(crate) trait AppendTx: Send {
    fn stream_version(&mut self, stream_id: &str) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
    /// The current version of each named stream that has events (absent ones are at 0).
    fn stream_versions(
        &mut self,
        stream_ids: &[&str],
    ) -> impl Future<Output = Result<HashMap<String, u64>, sqlx::Error>> + Send;
    /// Inserts every row in one statement per [`ROWS_PER_INSERT`]; returns each event's position.
    fn insert_rows(
        &mut self,
        rows: &[EventRow<'_>],
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<HashMap<Uuid, Position>, sqlx::Error>> + Send;
    fn insert(
        &mut self,
        stream_id: &str,
        version: u64,
        event: &NewEvent,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Position, sqlx::Error>> + Send;
    fn put_pii(&mut self, row: &PiiRow) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    fn find(&mut self, event_ids: &[Uuid]) -> impl Future<Output = Result<Vec<StoredId>, sqlx::Error>> + Send;
    fn exec(&mut self, sql: &'static str) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

#[derive(Debug, PartialEq)]
enum Violation {
    StreamVersion,
    EventId,
}

/// Postgres names the constraint; SQLite only names the columns.
fn unique_violation(e: &sqlx::Error) -> Option<Violation> {
    let sqlx::Error::Database(db) = e else { return None };
    if db.kind() != sqlx::error::ErrorKind::UniqueViolation {
        return None;
    }
    match db.constraint() {
        Some("events_event_id_key") => Some(Violation::EventId),
        Some("events_stream_version_key") => Some(Violation::StreamVersion),
        Some(_) => None,
        None if db.message().contains("events.event_id") => Some(Violation::EventId),
        None if db.message().contains("events.stream_id") => Some(Violation::StreamVersion),
        None => None,
    }
}

/// Appends a batch of requests inside the caller's transaction: all of them in a few
/// statements when nothing stands in the way (the usual case), else one at a time, each in
/// its own savepoint, so one request's conflict or refused value never fails another.
/// The outer error means the transaction itself is lost (connection, disk): nothing of the
/// batch can be committed.
pub(crate) async fn append_all<T: AppendTx>(
    tx: &mut T,
    requests: &[AppendRequest],
) -> Result<Vec<Result<AppendResult, StoreError>>, StoreError> {
    let now = Utc::now();
    if let Some(results) = append_together(tx, requests, now).await? {
        return Ok(results);
    }
    let mut results = Vec::with_capacity(requests.len());
    for request in requests {
        results.push(append_one(tx, request, now).await?);
    }
    Ok(results)
}

/// Undoes the statements since `savepoint`; an error means the transaction itself is gone.
async fn roll_back_to<T: AppendTx>(tx: &mut T, savepoint: Savepoint) -> Result<(), sqlx::Error> {
    tx.exec(savepoint.rollback).await?;
    tx.exec(savepoint.release).await
}

#[derive(Clone, Copy)]
struct Savepoint {
    open: &'static str,
    release: &'static str,
    rollback: &'static str,
}

const BATCH: Savepoint = Savepoint {
    open: "SAVEPOINT licensd_batch",
    release: "RELEASE SAVEPOINT licensd_batch",
    rollback: "ROLLBACK TO SAVEPOINT licensd_batch",
};

const ONE: Savepoint = Savepoint {
    open: "SAVEPOINT licensd_append",
    release: "RELEASE SAVEPOINT licensd_append",
    rollback: "ROLLBACK TO SAVEPOINT licensd_append",
};

/// Every request at once: one read of the streams' versions, one insert. `None`, with nothing
/// changed, when any expectation fails, any event id is stored already (a retried append) or
/// any statement fails (a value the database refuses): those need the one-at-a-time path,
/// which tells the cases apart and pins a failure on its own request.
async fn append_together<T: AppendTx>(
    tx: &mut T,
    requests: &[AppendRequest],
    now: DateTime<Utc>,
) -> Result<Option<Vec<Result<AppendResult, StoreError>>>, StoreError> {
    if requests.iter().any(|r| r.events.is_empty()) {
        return Ok(None);
    }
    // Even the version read sits inside the savepoint: on Postgres a stream id the database
    // refuses fails that read, and a failed statement outside a savepoint ends the batch.
    tx.exec(BATCH.open).await?;
    let (after, positions) = match insert_together(tx, requests, now).await {
        Ok(Some(inserted)) => inserted,
        Ok(None) => {
            roll_back_to(tx, BATCH).await?;
            return Ok(None);
        }
        Err(e) => {
            if unique_violation(&e).is_none() {
                tracing::debug!(error = %e, "a batch statement failed; appending one request at a time");
            }
            // When even the rollback fails the transaction is gone, and `e` is why.
            return match roll_back_to(tx, BATCH).await {
                Ok(()) => Ok(None),
                Err(_) => Err(e.into()),
            };
        }
    };
    tx.exec(BATCH.release).await?;
    let results = requests
        .iter()
        .zip(after)
        .map(|(request, version)| {
            let last = request.events.last().map(|e| e.event_id).unwrap_or_default();
            let position = positions
                .get(&last)
                .copied()
                .ok_or_else(|| StoreError::Corrupt(format!("the insert returned no position for event {last}")))?;
            Ok(AppendResult { version, position, idempotent: false })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some(results.into_iter().map(Ok).collect()))
}

/// The statements of [`append_together`]: each request's version after the append and every
/// event's position, or `None` when an expectation fails.
#[allow(clippy::type_complexity)]
async fn insert_together<T: AppendTx>(
    tx: &mut T,
    requests: &[AppendRequest],
    now: DateTime<Utc>,
) -> Result<Option<(Vec<u64>, HashMap<Uuid, Position>)>, sqlx::Error> {
    let mut streams: Vec<&str> = requests.iter().map(|r| r.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut versions = tx.stream_versions(&streams).await?;
    let mut rows = Vec::new();
    let mut after = Vec::with_capacity(requests.len());
    for request in requests {
        let current = versions.entry(request.stream_id.clone()).or_insert(0);
        let holds = match request.expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => *current == 0,
            ExpectedVersion::Exact(n) => *current == n,
        };
        if !holds {
            return Ok(None);
        }
        for (offset, event) in (1..).zip(&request.events) {
            rows.push(EventRow { stream_id: &request.stream_id, version: *current + offset, event });
        }
        *current += request.events.len() as u64;
        after.push(*current);
    }
    let positions = tx.insert_rows(&rows, now).await?;
    for row in requests.iter().flat_map(|r| &r.pii) {
        tx.put_pii(row).await?;
    }
    Ok(Some((after, positions)))
}

/// Races with a concurrent writer on an `Any` append are retried this often.
const ANY_RETRIES: usize = 3;

async fn append_one<T: AppendTx>(
    tx: &mut T,
    request: &AppendRequest,
    now: DateTime<Utc>,
) -> Result<Result<AppendResult, StoreError>, StoreError> {
    if request.events.is_empty() {
        return Ok(Err(StoreError::Config("an append needs at least one event".into())));
    }
    for _ in 0..ANY_RETRIES {
        tx.exec(ONE.open).await?;
        let (violation, actual) = match insert_all(tx, request, now).await {
            Ok(Ok(result)) => {
                tx.exec(ONE.release).await?;
                return Ok(Ok(result));
            }
            Ok(Err(actual)) => (Violation::StreamVersion, Some(actual)),
            Err(e) => match unique_violation(&e) {
                Some(violation) => (violation, None),
                None => {
                    // This request's statement failed; undone, it fails this request only.
                    let error = StoreError::from(e);
                    if roll_back_to(tx, ONE).await.is_err() {
                        return Err(error);
                    }
                    tracing::warn!(stream_id = %request.stream_id, %error, "one append of a batch failed");
                    return Ok(Err(error));
                }
            },
        };
        roll_back_to(tx, ONE).await?;
        // A retried append whose events are all stored already is a success, not a conflict.
        if let Some(stored) = already_stored(tx, request).await? {
            return Ok(stored);
        }
        match violation {
            Violation::EventId => {
                let event_id = request.events[0].event_id;
                return Ok(Err(StoreError::DuplicateEventId { event_id }));
            }
            Violation::StreamVersion if request.expected == ExpectedVersion::Any => continue,
            Violation::StreamVersion => {
                let actual = match actual {
                    Some(actual) => actual,
                    None => tx.stream_version(&request.stream_id).await?,
                };
                let (stream_id, expected) = (request.stream_id.clone(), request.expected);
                return Ok(Err(StoreError::WrongExpectedVersion { stream_id, expected, actual }));
            }
        }
    }
    Err(StoreError::Unavailable(format!("stream {} kept changing under {ANY_RETRIES} appends", request.stream_id)))
}

/// Inserts the events, or answers the stream's actual version when the expectation fails.
async fn insert_all<T: AppendTx>(
    tx: &mut T,
    request: &AppendRequest,
    now: DateTime<Utc>,
) -> Result<Result<AppendResult, u64>, sqlx::Error> {
    let actual = tx.stream_version(&request.stream_id).await?;
    let matches = match request.expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual == 0,
        ExpectedVersion::Exact(n) => actual == n,
    };
    if !matches {
        return Ok(Err(actual));
    }
    let mut position = Position::START;
    for (offset, event) in (1..).zip(&request.events) {
        position = tx.insert(&request.stream_id, actual + offset, event, now).await?;
    }
    for row in &request.pii {
        tx.put_pii(row).await?;
    }
    let version = actual + request.events.len() as u64;
    Ok(Ok(AppendResult { version, position, idempotent: false }))
}

/// `Some(Ok)` when every event of the request is stored, in this stream, in this order;
/// `Some(Err)` when some are stored elsewhere or only partly; `None` when none is stored.
async fn already_stored<T: AppendTx>(
    tx: &mut T,
    request: &AppendRequest,
) -> Result<Option<Result<AppendResult, StoreError>>, StoreError> {
    let ids: Vec<Uuid> = request.events.iter().map(|e| e.event_id).collect();
    let mut stored = tx.find(&ids).await?;
    if stored.is_empty() {
        return Ok(None);
    }
    stored.sort_by_key(|s| ids.iter().position(|id| *id == s.event_id));
    let same_stream = stored.iter().all(|s| s.stream_id == request.stream_id);
    let consecutive = stored.windows(2).all(|w| w[1].version == w[0].version + 1);
    match stored.last() {
        Some(last) if stored.len() == ids.len() && same_stream && consecutive => {
            Ok(Some(Ok(AppendResult { version: last.version, position: last.position, idempotent: true })))
        }
        _ => Ok(Some(Err(StoreError::DuplicateEventId { event_id: stored[0].event_id }))),
    }
}
