//! The append algorithm, written once over a small transaction trait both backends implement.
//!
//! The usual batch costs one statement: every request's version check and every event's insert
//! at once (see [`AppendTx::insert_checked`]), between `BEGIN` and `COMMIT`. Only a batch where
//! something stands in the way (a failed expectation, a retried append, a value the database
//! refuses) takes the slower path, one request at a time, each in its own savepoint.

use crate::{AppendPaths, AppendResult, EncodedAppend, EncodedEvent, ExpectedVersion, PiiRow, Position, StoreError};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use uuid::Uuid;

/// SQL both backends share.
pub(crate) const STREAM_VERSION_SQL: &str = "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1";

/// A stored event's identity, as far as the idempotency check needs it.
pub(crate) struct StoredId {
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: u64,
    pub position: Position,
}

/// One event row of the check-and-insert statement. Versions are relative, because the statement
/// itself reads each stream's head (its current version): the row is stored at `head + step`,
/// and only if every row's `expect` holds.
pub(crate) struct PlannedRow<'a> {
    pub stream_id: &'a str,
    pub event: &'a EncodedEvent,
    /// This event's version minus the stream's head before the statement (1 for the first).
    pub step: i64,
    /// The head the stream must have before the statement, or [`ANY_HEAD`].
    pub expect: i64,
}

/// `expect` of a row whose request takes the stream at any version.
pub(crate) const ANY_HEAD: i64 = -1;

/// What the check-and-insert statement stored of one row.
pub(crate) struct Inserted {
    pub event_id: Uuid,
    pub version: u64,
    pub position: Position,
}

/// Writes one sealed PII field (both backends share the SQL).
pub const UPSERT_PII: &str = "INSERT INTO pii (subject, field, value) VALUES ($1, $2, $3) \
                                     ON CONFLICT (subject, field) DO UPDATE SET value = excluded.value";

/// The statements the append algorithm needs inside one open write transaction.
pub(crate) trait AppendTx: Send {
    /// Most rows one [`Self::insert_checked`] statement takes.
    const MAX_ROWS: usize;

    /// The two statements that undo everything this append did and leave the transaction open
    /// for another try (`ROLLBACK` and `BEGIN` when the store owns the transaction).
    fn start_over_sql(&self) -> [&'static str; 2];

    fn stream_version(&mut self, stream_id: &str) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
    /// In one statement: reads the head of every stream the rows name, and unless some row's
    /// `expect` differs from its stream's head, inserts every row at `head + step`, in order.
    /// Returns what it inserted: every row, or none when an expectation failed.
    fn insert_checked(
        &mut self,
        rows: &[PlannedRow<'_>],
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Inserted>, sqlx::Error>> + Send;
    fn insert(
        &mut self,
        stream_id: &str,
        version: u64,
        event: &EncodedEvent,
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

/// Appends a batch of requests inside the caller's transaction: all of them in one statement
/// when nothing stands in the way (the usual case), else one at a time, each in its own
/// savepoint, so one request's conflict or refused value never fails another.
/// The outer error means the transaction itself is lost (connection, disk): nothing of the
/// batch can be committed.
pub(crate) async fn append_all<T: AppendTx>(
    tx: &mut T,
    requests: &[EncodedAppend],
    paths: &AppendPaths,
) -> Result<Vec<Result<AppendResult, StoreError>>, StoreError> {
    let now = Utc::now();
    match append_together(tx, requests, now).await {
        Together::Appended(results) => {
            paths.together.fetch_add(1, Ordering::Relaxed);
            return Ok(results);
        }
        Together::Untouched => {}
        Together::Undo(why) => start_over(tx, why).await?,
    }
    paths.one_by_one.fetch_add(1, Ordering::Relaxed);
    let mut results = Vec::with_capacity(requests.len());
    for request in requests {
        results.push(append_one(tx, request, now).await?);
    }
    Ok(results)
}

/// Rolls the whole transaction back and begins it again: cheaper, in the usual case, than a
/// savepoint around every batch. An error means the transaction is gone (`why` says why).
async fn start_over<T: AppendTx>(tx: &mut T, why: Option<sqlx::Error>) -> Result<(), StoreError> {
    let [undo, again] = tx.start_over_sql();
    let restarted = match tx.exec(undo).await {
        Ok(()) => tx.exec(again).await,
        Err(e) => Err(e),
    };
    restarted.map_err(|e| StoreError::from(why.unwrap_or(e)))
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

const ONE: Savepoint = Savepoint {
    open: "SAVEPOINT licensd_append",
    release: "RELEASE SAVEPOINT licensd_append",
    rollback: "ROLLBACK TO SAVEPOINT licensd_append",
};

/// How the all-at-once attempt ended.
enum Together {
    /// Every request appended.
    Appended(Vec<Result<AppendResult, StoreError>>),
    /// Nothing written and the transaction intact: an expectation failed before any insert.
    Untouched,
    /// The transaction holds part of the batch or was aborted by a failed statement.
    Undo(Option<sqlx::Error>),
}

/// Every request at once, in one check-and-insert statement per [`AppendTx::MAX_ROWS`] rows.
/// Any failed expectation, stored event id (a retried append) or refused value leaves it to the
/// one-at-a-time path, which tells those cases apart and pins a failure on its own request.
async fn append_together<T: AppendTx>(tx: &mut T, requests: &[EncodedAppend], now: DateTime<Utc>) -> Together {
    if requests.iter().any(|r| r.events.is_empty() || r.events.len() > T::MAX_ROWS) {
        return Together::Untouched;
    }
    let mut stored = HashMap::with_capacity(requests.len());
    for chunk in chunks(requests, T::MAX_ROWS) {
        let written = !stored.is_empty();
        let give_up =
            |why: Option<sqlx::Error>| if written || why.is_some() { Together::Undo(why) } else { Together::Untouched };
        let Some(rows) = plan(chunk) else { return give_up(None) };
        match tx.insert_checked(&rows, now).await {
            Ok(inserted) if inserted.len() == rows.len() => {
                stored.extend(inserted.into_iter().map(|i| (i.event_id, (i.version, i.position))));
            }
            Ok(inserted) if inserted.is_empty() => return give_up(None),
            Ok(inserted) => {
                tracing::warn!(rows = rows.len(), inserted = inserted.len(), "a batch statement stored only part");
                return Together::Undo(None);
            }
            Err(e) => {
                if unique_violation(&e).is_none() {
                    tracing::debug!(error = %e, "a batch statement failed; appending one request at a time");
                }
                return give_up(Some(e));
            }
        }
    }
    for row in requests.iter().flat_map(|r| &r.pii) {
        if let Err(e) = tx.put_pii(row).await {
            return Together::Undo(Some(e));
        }
    }
    let results = requests.iter().map(|request| {
        let last = request.events.last().map(|e| e.event_id).unwrap_or_default();
        match stored.get(&last) {
            Some(&(version, position)) => Ok(AppendResult { version, position, idempotent: false }),
            None => Err(StoreError::Corrupt(format!("the insert returned no position for event {last}"))),
        }
    });
    Together::Appended(results.collect())
}

/// Consecutive runs of whole requests with at most `max_rows` events each.
fn chunks(requests: &[EncodedAppend], max_rows: usize) -> impl Iterator<Item = &[EncodedAppend]> {
    let mut rest = requests;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut rows = 0;
        let take = rest
            .iter()
            .take_while(|r| {
                rows += r.events.len();
                rows <= max_rows
            })
            .count()
            .max(1);
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        Some(chunk)
    })
}

/// The rows of one statement, each with its step past its stream's head and the head its request
/// expects; `None` when an expectation cannot hold whatever the heads are (a second `NoStream`
/// append to one stream in the same statement).
fn plan(requests: &[EncodedAppend]) -> Option<Vec<PlannedRow<'_>>> {
    let mut earlier: HashMap<&str, i64> = HashMap::with_capacity(requests.len());
    let mut rows = Vec::with_capacity(requests.iter().map(|r| r.events.len()).sum());
    for request in requests {
        let before = earlier.entry(request.stream_id.as_str()).or_insert(0);
        let expect = match request.expected {
            ExpectedVersion::Any => ANY_HEAD,
            ExpectedVersion::NoStream => -*before,
            ExpectedVersion::Exact(n) => i64::try_from(n).ok()? - *before,
        };
        if request.expected != ExpectedVersion::Any && expect < 0 {
            return None;
        }
        for event in &request.events {
            *before += 1;
            rows.push(PlannedRow { stream_id: &request.stream_id, event, step: *before, expect });
        }
    }
    Some(rows)
}

/// Races with a concurrent writer on an `Any` append are retried this often.
const ANY_RETRIES: usize = 3;

async fn append_one<T: AppendTx>(
    tx: &mut T,
    request: &EncodedAppend,
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
    request: &EncodedAppend,
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
    request: &EncodedAppend,
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
