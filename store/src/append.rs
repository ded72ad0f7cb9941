//! The append algorithm, written once over a small transaction trait both backends implement.

use crate::{AppendRequest, AppendResult, ExpectedVersion, NewEvent, Position, StoreError};
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
/// its own savepoint, so one request's conflict never fails another.
pub(crate) async fn append_all<T: AppendTx>(
    tx: &mut T,
    requests: Vec<AppendRequest>,
) -> Result<Vec<Result<AppendResult, StoreError>>, StoreError> {
    let now = Utc::now();
    if let Some(results) = append_together(tx, &requests, now).await? {
        return Ok(results);
    }
    let mut results = Vec::with_capacity(requests.len());
    for request in &requests {
        results.push(append_one(tx, request, now).await?);
    }
    Ok(results)
}

/// Every request at once: one read of the streams' versions, one insert. `None`, with nothing
/// changed, when any expectation fails or any event id is stored already (a retried append):
/// those need the one-at-a-time path, which tells the cases apart.
async fn append_together<T: AppendTx>(
    tx: &mut T,
    requests: &[AppendRequest],
    now: DateTime<Utc>,
) -> Result<Option<Vec<Result<AppendResult, StoreError>>>, StoreError> {
    if requests.iter().any(|r| r.events.is_empty()) {
        return Ok(None);
    }
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
    tx.exec("SAVEPOINT licensd_batch").await?;
    let positions = match tx.insert_rows(&rows, now).await {
        Ok(positions) => positions,
        Err(e) if unique_violation(&e).is_some() => {
            tx.exec("ROLLBACK TO SAVEPOINT licensd_batch").await?;
            tx.exec("RELEASE SAVEPOINT licensd_batch").await?;
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    tx.exec("RELEASE SAVEPOINT licensd_batch").await?;
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
        tx.exec("SAVEPOINT licensd_append").await?;
        let (violation, actual) = match insert_all(tx, request, now).await {
            Ok(Ok(result)) => {
                tx.exec("RELEASE SAVEPOINT licensd_append").await?;
                return Ok(Ok(result));
            }
            Ok(Err(actual)) => (Violation::StreamVersion, Some(actual)),
            Err(e) => match unique_violation(&e) {
                Some(violation) => (violation, None),
                None => return Err(e.into()),
            },
        };
        tx.exec("ROLLBACK TO SAVEPOINT licensd_append").await?;
        tx.exec("RELEASE SAVEPOINT licensd_append").await?;
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
