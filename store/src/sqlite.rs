//! SQLite backend: one file in WAL mode, a single writer connection and a pool of readers.
//! One writer commits in sequence order, so plain `position` order is a safe global order.

use crate::append::{append_all, AppendTx, Inserted, PlannedRow, StoredId, ANY_HEAD, STREAM_VERSION_SQL, UPSERT_PII};
use crate::wal_sync::WalSync;
use crate::{
    AppendPaths, AppendResult, EncodedAppend, EncodedEvent, EventStore, LogEvent, LogPage, PiiRow, Position,
    RecordedEvent, StoreError, StoreOptions, StreamPage,
};
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// WAL frames (pages) beyond which the WAL file is started over: about 16 MiB.
const WAL_RESTART_FRAMES: i64 = 4096;

/// How long a RESTART checkpoint may hold new writes while it waits for readers.
const RESTART_WAIT_MS: u64 = 50;

/// Rows buffered between SQLite's thread and the reader (a typical `read_all` page).
const READ_PAGE_ROWS: usize = 1024;

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub(crate) writer: SqlitePool,
    pub(crate) reader: SqlitePool,
    /// The read models' own connection, to their own file ([`read_models_file`]): projecting
    /// never waits for, nor holds, the event writer's connection or the log's write lock.
    pub(crate) projector: SqlitePool,
    /// The log's file (the read models' file is named after it).
    log_file: std::path::PathBuf,
    /// Copies the WAL back into the database file, so the group-commit writer never does.
    checkpointer: SqlitePool,
    paths: Arc<AppendPaths>,
    /// With `synchronous=full` asked for: the writer's commits are made durable outside SQLite's
    /// write lock (see [`crate::wal_sync`]); `None` when `normal` was asked for (no sync at all).
    wal_sync: Option<Arc<WalSync>>,
}

/// Whether a writing connection (the log's or the read models') can start a transaction. A statement or `COMMIT` failing with
/// SQLITE_FULL or an I/O error makes SQLite roll the transaction back by itself; sqlx still counts
/// it as open and would refuse every later `BEGIN` ("non-zero transaction depth"), so writes would
/// never recover once the disk had room again. Such a connection is closed and replaced.
///
/// Only a connection sqlx still counts inside a transaction is probed: that count is a plain
/// read on this side, while the probe (`BEGIN` and `ROLLBACK`) is two round trips to SQLite's
/// thread, which on the log's writer were a third of every group commit's hand-offs. A count
/// of zero is never wrong in the way this guards against (sqlx only fails to lower it), and a
/// rollback still queued behind the release shows as a count above zero, so it is probed.
async fn can_begin(connection: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    if !connection.is_in_transaction() {
        return true;
    }
    // `begin_with`, not `begin`: at a miscounted depth `begin` quietly opens a savepoint instead.
    match connection.begin_with("BEGIN").await {
        Ok(probe) => probe.rollback().await.is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "replacing a SQLite writing connection after a failed transaction");
            false
        }
    }
}

impl SqliteStore {
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let synchronous =
            if options.sqlite_synchronous_full { SqliteSynchronous::Full } else { SqliteSynchronous::Normal };
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad SQLite URL: {e}")))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // The read models' file first: the log's readers attach it, so it must exist. The writer
        // does not: its `BEGIN IMMEDIATE` would take the write lock of every attached file, and
        // appends would wait for projections again.
        let log_file = base.get_filename().to_path_buf();
        let read_models = read_models_file(&log_file);
        // The same guard as the writer's: after a failed commit (a full disk) the read models must
        // recover once there is room, not refuse every later transaction. No ping before each
        // acquire (see the writer's).
        let projector = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .after_release(|connection, _| Box::pin(async move { Ok(can_begin(connection).await) }))
            .connect_with(base.clone().filename(&read_models).create_if_missing(true))
            .await?;
        let attach: std::sync::Arc<str> =
            format!("ATTACH DATABASE '{}' AS readmodels", read_models.display().to_string().replace('\'', "''")).into();
        // A commit that crosses the auto-checkpoint threshold would copy the WAL into the
        // database file inside the writer's commit, stalling every append queued behind it.
        // `synchronous=NORMAL` on this connection only: its COMMIT writes the WAL without the
        // fsync, which `WalSync` does after the write lock is released and before any answer.
        // No ping before each acquire (sqlx's default): the connection is in this process and
        // cannot drop like a socket, and the ping was one more round trip to SQLite's thread per
        // group commit.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .after_release(|connection, _| Box::pin(async move { Ok(can_begin(connection).await) }))
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .synchronous(SqliteSynchronous::Normal)
                    .pragma("wal_autocheckpoint", "0"),
            )
            .await?;
        let wal_sync = options.sqlite_synchronous_full.then(|| Arc::new(WalSync::new(&log_file)));
        if let Some(wal_sync) = &wal_sync {
            // A process that died before its sync can have left commits that this one reads
            // from the page cache and must not build on before they are durable.
            wal_sync.sync_now().await?;
        }
        // Rows cross from SQLite's thread one message each; a buffer the size of a log page lets
        // a whole page through without a thread hand-off per row (start-up reads millions).
        // No ping before each acquire either (see the writer's): the tails acquire one per page.
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .test_before_acquire(false)
            .after_connect(move |connection, _| {
                let attach = attach.clone();
                Box::pin(async move { sqlx::Executor::execute(connection, &*attach).await.map(drop) })
            })
            .connect_with(base.clone().read_only(true).row_buffer_size(READ_PAGE_ROWS))
            .await?;
        // A RESTART checkpoint holds new writes while it waits for readers: wait only briefly,
        // and try again a second later rather than stall the writer behind a slow reader.
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(base.busy_timeout(Duration::from_millis(RESTART_WAIT_MS)))
            .await?;
        Ok(Self { writer, reader, projector, log_file, checkpointer, paths: Arc::default(), wal_sync })
    }

    /// The read models' file first, then the rows only the log's file has (a data folder from
    /// before the split), then the log's file, whose migration 0009 drops its old copies.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations/sqlite-read").run(&self.projector).await?;
        self.move_delivery_bookkeeping().await?;
        sqlx::migrate!("../migrations/sqlite").run(&self.writer).await?;
        self.log_durable().await
    }

    /// Copies webhook deliveries (their attempts are not in the log) from the log's file into
    /// the read models' file while the log's file still has them. Idempotent: a start that dies
    /// before migration 0009 copies again, over rows already there.
    async fn move_delivery_bookkeeping(&self) -> Result<(), StoreError> {
        let old = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'webhook_deliveries'";
        if sqlx::query(old).fetch_optional(&self.writer).await?.is_none() {
            return Ok(());
        }
        let mut connection = self.projector.acquire().await?;
        let log = self.log_file.display().to_string().replace('\'', "''");
        sqlx::query(&format!("ATTACH DATABASE '{log}' AS log")).execute(&mut *connection).await?;
        // The columns the log's file had (the read models' table has gained ordering columns since,
        // left empty for these rows).
        let copied = sqlx::query(
            "INSERT INTO main.webhook_deliveries (delivery_id, webhook_id, event, body, created_at, status,
                attempts, next_attempt_at, last_attempt_at, last_status, last_error)
             SELECT delivery_id, webhook_id, event, body, created_at, status, attempts, next_attempt_at,
                last_attempt_at, last_status, last_error
             FROM log.webhook_deliveries WHERE true
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .execute(&mut *connection)
        .await;
        sqlx::query("DETACH DATABASE log").execute(&mut *connection).await?;
        tracing::info!(rows = copied?.rows_affected(), "webhook deliveries moved to the read models' file");
        Ok(())
    }

    /// A write transaction on the read models' file (`BEGIN IMMEDIATE`, as [`Self::begin_write`]).
    pub(crate) async fn begin_projection(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.projector.begin_with("BEGIN IMMEDIATE").await
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front, so a second process waits on
    /// `busy_timeout` instead of failing on a lock upgrade.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    /// Copies committed WAL frames into the database file without blocking the writer
    /// (`PASSIVE`). Under steady reads the WAL file is never started over by itself, so once it
    /// passes [`WAL_RESTART_FRAMES`] a `RESTART` checkpoint starts it over when readers allow
    /// within [`RESTART_WAIT_MS`] (new writes wait at most that long), else on a later call.
    /// Returns the frames in the WAL.
    pub async fn checkpoint(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&self.checkpointer).await?;
        let frames: i64 = row.try_get(1)?;
        if frames >= WAL_RESTART_FRAMES {
            // Busy (a reader on an old snapshot) is not a failure: the next call tries again.
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(RESTART)").fetch_one(&self.checkpointer).await {
                tracing::debug!(error = %e, "WAL restart postponed");
            }
        }
        Ok(frames)
    }

    /// Waits until every write committed on the log's connection so far is on disk (at once
    /// when `synchronous=normal` was asked for). Every write on that connection calls this
    /// after its commit and before its caller hears of it.
    pub(crate) async fn log_durable(&self) -> Result<(), StoreError> {
        match &self.wal_sync {
            Some(wal_sync) => wal_sync.durable(wal_sync.committed()).await,
            None => Ok(()),
        }
    }

    /// The read models' connection keeps `synchronous=FULL`: its commits are durable already.
    pub(crate) async fn projection_durable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Positions at or past this may be commits not yet synced; readers of the log's tail stop
    /// below it (see [`crate::wal_sync`]). Read it after the query it bounds.
    pub(crate) fn visible_below(&self) -> impl Fn() -> i64 + Send + 'static {
        let wal_sync = self.wal_sync.clone();
        move || wal_sync.as_ref().map_or(i64::MAX, |w| w.visible_below())
    }

    /// Holds every WAL sync back until the guard is dropped: commits still happen (and are
    /// visible to other connections), but no write on the log's connection is answered.
    #[cfg(feature = "testing")]
    pub async fn hold_wal_syncs(&self) -> Option<tokio::sync::OwnedRwLockWriteGuard<()>> {
        let wal_sync = self.wal_sync.as_ref()?;
        Some(wal_sync.hold.clone().write_owned().await)
    }

    /// The log's file, for the whole-log reader's own connection.
    pub(crate) fn log_file(&self) -> &std::path::Path {
        &self.log_file
    }

    pub fn append_paths(&self) -> &AppendPaths {
        &self.paths
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.checkpointer.close().await;
        self.projector.close().await;
        self.writer.close().await;
    }
}

/// The read models' file beside the log's: `licensd.db` → `licensd-read.db`.
pub fn read_models_file(log: &std::path::Path) -> std::path::PathBuf {
    let stem = log.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "licensd".into());
    log.with_file_name(format!("{stem}-read.db"))
}

struct SqliteAppend(Transaction<'static, Sqlite>);

/// The one-row insert of the one-at-a-time path.
const INSERT_EVENT: &str = "INSERT INTO events (event_id, stream_id, version, event_type, schema_version, payload, \
                            metadata, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING position";

/// Rows of the largest check-and-insert statement (8 parameters each, far below SQLite's limit).
const MAX_CHECKED_ROWS: usize = 1024;

/// The check-and-insert statement for `rows` rows (a power of two: few shapes, each prepared once
/// and then reused from the connection's statement cache; unused rows are bound as NULL and
/// insert nothing). Each row reads its stream's head (an index lookup) in the same statement, which
/// SQLite runs to the end before its first insert (its source reads the table it inserts into), so
/// no row sees another of the same statement.
fn checked_insert_sql(rows: usize) -> &'static str {
    static SHAPES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let head_of =
        |row: &str| format!("(SELECT COALESCE(MAX(e.version), 0) FROM events e WHERE e.stream_id = {row}.stream_id)");
    let shapes = SHAPES.get_or_init(|| {
        (0..=MAX_CHECKED_ROWS.trailing_zeros())
            .map(|power| {
                let values: Vec<String> =
                    (0..1usize << power).map(|ord| format!("({ord}, ?, ?, ?, ?, ?, ?, ?, ?)")).collect();
                format!(
                    "WITH batch(ord, event_id, stream_id, step, expect, event_type, schema_version, payload, metadata) \
                     AS (VALUES {}) \
                     INSERT INTO events (event_id, stream_id, version, event_type, schema_version, payload, metadata, \
                       recorded_at) \
                     SELECT b.event_id, b.stream_id, b.step + {head_b}, b.event_type, b.schema_version, \
                       b.payload, b.metadata, ? \
                     FROM batch b \
                     WHERE b.stream_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM batch x \
                       WHERE x.expect <> {ANY_HEAD} AND x.expect <> {head_x}) \
                     ORDER BY b.ord \
                     RETURNING event_id, version, position",
                    values.join(", "),
                    head_b = head_of("b"),
                    head_x = head_of("x"),
                )
            })
            .collect()
    });
    &shapes[rows.max(1).next_power_of_two().trailing_zeros() as usize]
}

impl AppendTx for SqliteAppend {
    const MAX_ROWS: usize = MAX_CHECKED_ROWS;

    fn start_over_sql(&self) -> [&'static str; 2] {
        ["ROLLBACK", "BEGIN IMMEDIATE"]
    }

    async fn stream_version(&mut self, stream_id: &str) -> Result<u64, sqlx::Error> {
        let version: i64 = sqlx::query_scalar(STREAM_VERSION_SQL).bind(stream_id).fetch_one(&mut *self.0).await?;
        Ok(version as u64)
    }

    async fn insert_checked(
        &mut self,
        rows: &[PlannedRow<'_>],
        at: DateTime<Utc>,
    ) -> Result<Vec<Inserted>, sqlx::Error> {
        let mut query = sqlx::query(checked_insert_sql(rows.len()));
        for row in rows {
            query = query
                .bind(row.event.event_id_text.as_str())
                .bind(row.stream_id)
                .bind(row.step)
                .bind(row.expect)
                .bind(row.event.event_type.as_str())
                .bind(row.event.schema_version)
                .bind(row.event.payload.as_str())
                .bind(row.event.metadata.as_str());
        }
        for _ in rows.len()..rows.len().max(1).next_power_of_two() {
            for _ in 0..8 {
                query = query.bind(None::<&str>);
            }
        }
        let returned = query.bind(at).fetch_all(&mut *self.0).await?;
        returned
            .into_iter()
            .map(|row| {
                let id: &str = row.try_get(0)?;
                Ok(Inserted {
                    event_id: Uuid::parse_str(id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    version: row.try_get::<i64, _>(1)? as u64,
                    position: Position { tx: 0, seq: row.try_get(2)? },
                })
            })
            .collect()
    }

    async fn insert(
        &mut self,
        stream_id: &str,
        version: u64,
        event: &EncodedEvent,
        at: DateTime<Utc>,
    ) -> Result<Position, sqlx::Error> {
        let seq: i64 = sqlx::query_scalar(INSERT_EVENT)
            .bind(event.event_id_text.as_str())
            .bind(stream_id)
            .bind(version as i64)
            .bind(event.event_type.as_str())
            .bind(event.schema_version)
            .bind(event.payload.as_str())
            .bind(event.metadata.as_str())
            .bind(at)
            .fetch_one(&mut *self.0)
            .await?;
        Ok(Position { tx: 0, seq })
    }

    async fn put_pii(&mut self, row: &PiiRow) -> Result<(), sqlx::Error> {
        let query = sqlx::query(UPSERT_PII).bind(&row.subject).bind(&row.field).bind(&row.sealed);
        query.execute(&mut *self.0).await.map(drop)
    }

    async fn find(&mut self, event_ids: &[Uuid]) -> Result<Vec<StoredId>, sqlx::Error> {
        let mut found = Vec::new();
        for id in event_ids {
            let row = sqlx::query("SELECT stream_id, version, position FROM events WHERE event_id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *self.0)
                .await?;
            if let Some(row) = row {
                found.push(StoredId {
                    event_id: *id,
                    stream_id: row.try_get("stream_id")?,
                    version: row.try_get::<i64, _>("version")? as u64,
                    position: Position { tx: 0, seq: row.try_get("position")? },
                });
            }
        }
        Ok(found)
    }

    async fn exec(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::query(sql).execute(&mut *self.0).await.map(drop)
    }
}

/// The position of the first event this batch added (its requests' events are consecutive):
/// `None` when it added none (every request failed or was a retry of a stored append).
fn first_new_position(requests: &[EncodedAppend], results: &[Result<AppendResult, StoreError>]) -> Option<i64> {
    requests
        .iter()
        .zip(results)
        .filter_map(|(request, result)| match result {
            Ok(r) if !r.idempotent => Some(r.position.seq - request.events.len() as i64 + 1),
            _ => None,
        })
        .min()
}

impl SqliteStore {
    /// [`EventStore::read_all`] as a [`LogPage`]: no metadata, and the payload as stored, not
    /// parsed here (the reader parses it once into its event), in one buffer for the page rather
    /// than several allocations per event. The in-memory model's tail reads the log this way.
    pub(crate) async fn read_log_page(&self, after: Position, limit: usize) -> Result<LogPage, StoreError> {
        const SQL: &str = "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
                           recorded_at FROM events WHERE position > $1 ORDER BY position LIMIT $2";
        let rows = sqlx::query(SQL).bind(after.seq).bind(limit as i64).fetch_all(&self.reader).await?;
        // After the query, as in `read_all`: any commit it saw is synced or still listed by now.
        let below = self.visible_below()();
        let mut page = LogPage::with_capacity(rows.len());
        for row in &rows {
            let event_id: &str = row.try_get(1)?;
            page.push(LogEvent {
                position: Position { tx: 0, seq: row.try_get(0)? },
                event_id: Uuid::parse_str(event_id).map_err(|e| StoreError::Corrupt(format!("event_id: {e}")))?,
                stream_id: row.try_get(2)?,
                version: row.try_get::<i64, _>(3)? as u64,
                event_type: row.try_get(4)?,
                schema_version: row.try_get(5)?,
                payload: row.try_get(6)?,
                recorded_at: row.try_get(7)?,
            });
        }
        page.keep_below(below);
        Ok(page)
    }
}

const SELECT_EVENTS: &str = "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
                             metadata, recorded_at FROM events";

fn decode(row: SqliteRow) -> Result<RecordedEvent, StoreError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
    let event_id: String = row.try_get("event_id")?;
    let payload: String = row.try_get("payload")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(RecordedEvent {
        position: Position { tx: 0, seq: row.try_get("position")? },
        event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt("event_id", &e))?,
        stream_id: row.try_get("stream_id")?,
        version: row.try_get::<i64, _>("version")? as u64,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        payload: RawValue::from_string(payload).map_err(|e| corrupt("payload", &e))?,
        metadata: RawValue::from_string(metadata).map_err(|e| corrupt("metadata", &e))?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

impl EventStore for SqliteStore {
    async fn append_encoded(
        &self,
        requests: Vec<EncodedAppend>,
    ) -> Result<Vec<Result<AppendResult, StoreError>>, StoreError> {
        let mut tx = SqliteAppend(self.begin_write().await?);
        let results = append_all(&mut tx, &requests, &self.paths).await?;
        // Registered before the COMMIT makes the batch visible, so that no tail reader takes it
        // before it is synced.
        let first = first_new_position(&requests, &results).filter(|_| self.wal_sync.is_some());
        if let (Some(wal_sync), Some(first)) = (&self.wal_sync, first) {
            wal_sync.registering(first);
        }
        // The COMMIT hands the connection back at once; the wait for the disk happens without
        // it, so the next batch's inserts and commit overlap this one's sync.
        let committed = crate::commit_timing::timed_commit(async {
            tx.0.commit().await?;
            Ok::<_, StoreError>(self.log_durable().await)
        })
        .await;
        if let (Some(wal_sync), Some(first)) = (&self.wal_sync, first) {
            // After a failed sync the batch stays listed: its fate is unknown until a restart,
            // and the tails wait for it rather than build on it.
            if !matches!(committed, Ok(Err(_))) {
                wal_sync.forget(first);
            }
        }
        committed??;
        Ok(results)
    }

    async fn read_stream(&self, stream_id: &str, from_version: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!("{SELECT_EVENTS} WHERE stream_id = $1 AND version >= $2 ORDER BY version");
        let rows = sqlx::query(&sql).bind(stream_id).bind(from_version as i64).fetch_all(&self.reader).await?;
        rows.into_iter().map(decode).collect()
    }

    async fn read_stream_page(&self, stream_id: &str, page: StreamPage) -> Result<Vec<RecordedEvent>, StoreError> {
        let (condition, from, limit) = page.sql();
        let sql = format!("{SELECT_EVENTS} WHERE stream_id = $1 AND {condition} LIMIT $3");
        let rows = sqlx::query(&sql).bind(stream_id).bind(from).bind(limit).fetch_all(&self.reader).await?;
        rows.into_iter().map(decode).collect()
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!("{SELECT_EVENTS} WHERE position > $1 ORDER BY position LIMIT $2");
        let rows = sqlx::query(&sql).bind(after.seq).bind(limit as i64).fetch_all(&self.reader).await?;
        // After the query: any commit it saw is synced or still listed by now.
        let below = self.visible_below()();
        let events = rows.into_iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        Ok(events.into_iter().take_while(|e| e.position.seq < below).collect())
    }
}
