//! Postgres backend. Sequences hand out positions at insert time but transactions commit in any
//! order, so a reader that trusted `position > checkpoint` could step over an event committed
//! late. Each event records its writing transaction id; readers only take events of transactions
//! older than the oldest still running (`pg_snapshot_xmin`), ordered by (tx, position).

use crate::append::{append_all, AppendTx, Inserted, PlannedRow, StoredId, STREAM_VERSION_SQL, UPSERT_PII};
use crate::{
    AppendPaths, AppendRequest, AppendResult, EncodedAppend, EncodedEvent, EventStore, LogEvent, LogPage, PiiRow,
    Position, RecordedEvent, StoreError, StoreOptions, StreamPage,
};
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Row, Transaction};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    /// How long a commit whose acknowledgement was lost is looked up before it counts as unknown.
    commit_settle: Duration,
    paths: Arc<AppendPaths>,
}

/// Pause between two looks at a transaction whose commit is still being settled.
const SETTLE_POLL: Duration = Duration::from_millis(50);

/// A pooled connection idle for longer than this is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The check before a pooled connection is handed out. sqlx's default pings every time: a
/// round trip to the server per acquire, which the profile of `/auth/validate` on Postgres
/// put at 6.5 % of licensd's CPU (the group commit and every tail page acquire one) and one
/// more network wait in front of each batch's `BEGIN`. A connection in use moments ago is
/// not pinged; one idle for a while (where a server restart or a dropped socket would hide)
/// still is, and a failed ping discards it so that the caller gets another. A connection that
/// breaks while in use is discarded by sqlx's own check when it is released.
async fn ping_if_idle(
    connection: &mut sqlx::PgConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    if meta.idle_for < PING_AFTER_IDLE {
        return Ok(true);
    }
    sqlx::Connection::ping(connection).await.map(|()| true)
}

impl PostgresStore {
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let mut connect: PgConnectOptions = url.parse()?;
        if !options.idle_in_transaction.is_zero() {
            // Sent in the start-up packet, so no session of ours ever runs without it.
            let ms = options.idle_in_transaction.as_millis().max(1).to_string();
            connect = connect.options([("idle_in_transaction_session_timeout", ms.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .before_acquire(|connection, meta| Box::pin(ping_if_idle(connection, meta)))
            .connect_with(connect)
            .await?;
        Ok(Self { pool, commit_settle: options.commit_settle, paths: Arc::default() })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations/postgres").run(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Waits (at most `timeout`) until every transaction that had committed when this was called
    /// is below the reader's horizon, so `read_all` returns it. The horizon is the oldest
    /// transaction still running anywhere in the cluster: a short write elsewhere (another node's
    /// batch, another database's) holds it back for a moment, and a caller that looks for what
    /// another process has just written (an operator command, another node) must wait that moment
    /// out rather than conclude that the thing does not exist. Tells whether the horizon got there
    /// before `timeout`.
    pub async fn settle(&self, timeout: Duration) -> Result<bool, StoreError> {
        const HORIZON: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint";
        let target: i64 = sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            .fetch_one(&self.pool)
            .await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let horizon: i64 = sqlx::query_scalar(HORIZON).fetch_one(&self.pool).await?;
            if horizon >= target {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Appends inside a caller-held transaction: lets tests hold a commit back to reproduce
    /// out-of-order visibility.
    pub async fn append_in(
        tx: &mut Transaction<'static, Postgres>,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<Result<AppendResult, StoreError>>, StoreError> {
        let requests: Vec<_> = requests.into_iter().map(AppendRequest::encode).collect();
        sqlx::query("SAVEPOINT licensd_caller").execute(&mut **tx).await?;
        append_all(&mut PgAppend(tx, Owner::Caller), &requests, &AppendPaths::default()).await
    }

    pub fn append_paths(&self) -> &AppendPaths {
        &self.paths
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The connection broke while `COMMIT` was in flight, so the batch may or may not be stored.
    /// Postgres knows the fate of a transaction by its id (`pg_xact_status`); every event a
    /// batch appended carries that id. Committed: the results stand. Aborted: nothing was
    /// written, a plain failure the caller may retry. Still running, or the server out of reach
    /// for [`Self::commit_settle`]: [`StoreError::CommitUnknown`], never "failed".
    async fn settle_commit(
        &self,
        results: Vec<Result<AppendResult, StoreError>>,
        lost: sqlx::Error,
    ) -> Result<Vec<Result<AppendResult, StoreError>>, StoreError> {
        // Without a successful request the batch wrote nothing; its answers are final already.
        let Some(tx) = results.iter().find_map(|r| r.as_ref().ok()).map(|r| r.position.tx) else {
            return Ok(results);
        };
        let deadline = tokio::time::Instant::now() + self.commit_settle;
        let mut last = format!("the connection was lost during COMMIT ({lost})");
        loop {
            let status = sqlx::query_scalar::<_, Option<String>>("SELECT pg_xact_status($1::text::xid8)")
                .bind(tx)
                .fetch_one(&self.pool);
            match tokio::time::timeout_at(deadline, status).await {
                Ok(Ok(Some(status))) if status == "committed" => {
                    tracing::warn!(tx, "commit acknowledgement lost; the transaction committed");
                    return Ok(results);
                }
                Ok(Ok(Some(status))) if status == "aborted" => {
                    return Err(StoreError::Unavailable(format!("{last}; the transaction was rolled back")));
                }
                Ok(Ok(status)) => last = format!("transaction {tx} is {}", status.as_deref().unwrap_or("unknown")),
                Ok(Err(e)) => last = format!("the outcome cannot be looked up: {e}"),
                Err(_) => {}
            }
            if tokio::time::Instant::now() + SETTLE_POLL >= deadline {
                tracing::error!(tx, outcome = %last, "commit outcome unknown");
                return Err(StoreError::CommitUnknown(last));
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }
}

/// A commit failure the server did not answer (connection lost, broken protocol): the
/// `COMMIT` may have taken effect. A database error is the server's definite "no".
fn commit_outcome_unknown(e: &sqlx::Error) -> bool {
    !matches!(e, sqlx::Error::Database(_))
}

struct PgAppend<'t>(&'t mut Transaction<'static, Postgres>, Owner);

/// Who began the transaction an append runs in.
#[derive(Clone, Copy)]
enum Owner {
    Store,
    /// [`PostgresStore::append_in`]: a savepoint marks where this append began.
    Caller,
}

/// The one-row insert of the one-at-a-time path.
const INSERT_EVENT: &str = "INSERT INTO events (event_id, stream_id, version, event_type, schema_version, payload, \
                            metadata, recorded_at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8) \
                            RETURNING tx_id, position";

/// The whole batch in one round trip: the rows arrive as one array per column, each stream's head
/// is read by the statement itself, and nothing is inserted unless every expectation holds.
/// `ORDER BY ord` makes positions follow the batch's order.
const CHECKED_INSERT: &str = "\
    WITH batch AS ( \
        SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::int4[], $7::text[], \
            $8::text[]) WITH ORDINALITY \
            AS b(event_id, stream_id, step, expect, event_type, schema_version, payload, metadata, ord)), \
    heads AS ( \
        SELECT s.stream_id, COALESCE((SELECT MAX(e.version) FROM events e WHERE e.stream_id = s.stream_id), 0) AS head \
        FROM (SELECT DISTINCT stream_id FROM batch) s) \
    INSERT INTO events (event_id, stream_id, version, event_type, schema_version, payload, metadata, recorded_at) \
    SELECT b.event_id, b.stream_id, h.head + b.step, b.event_type, b.schema_version, b.payload::jsonb, \
        b.metadata::jsonb, $9 \
    FROM batch b JOIN heads h USING (stream_id) \
    WHERE NOT EXISTS (SELECT 1 FROM batch x JOIN heads y USING (stream_id) \
        WHERE x.expect <> -1 AND x.expect <> y.head) \
    ORDER BY b.ord \
    RETURNING event_id, version, tx_id, position";

impl AppendTx for PgAppend<'_> {
    /// Arrays carry the rows: one statement takes any batch.
    const MAX_ROWS: usize = usize::MAX;

    fn start_over_sql(&self) -> [&'static str; 2] {
        match self.1 {
            Owner::Store => ["ROLLBACK", "BEGIN"],
            // Only what this append did is undone; the caller's own statements stay.
            Owner::Caller => ["ROLLBACK TO SAVEPOINT licensd_caller", "RELEASE SAVEPOINT licensd_caller"],
        }
    }

    async fn stream_version(&mut self, stream_id: &str) -> Result<u64, sqlx::Error> {
        let version: i64 = sqlx::query_scalar(STREAM_VERSION_SQL).bind(stream_id).fetch_one(&mut **self.0).await?;
        Ok(version as u64)
    }

    async fn insert_checked(
        &mut self,
        rows: &[PlannedRow<'_>],
        at: DateTime<Utc>,
    ) -> Result<Vec<Inserted>, sqlx::Error> {
        fn column<'r>(rows: &'r [PlannedRow<'_>], field: impl Fn(&'r PlannedRow<'_>) -> &'r str) -> Vec<&'r str> {
            rows.iter().map(field).collect()
        }
        let returned = sqlx::query(CHECKED_INSERT)
            .bind(rows.iter().map(|r| r.event.event_id).collect::<Vec<Uuid>>())
            .bind(column(rows, |r| r.stream_id))
            .bind(rows.iter().map(|r| r.step).collect::<Vec<i64>>())
            .bind(rows.iter().map(|r| r.expect).collect::<Vec<i64>>())
            .bind(column(rows, |r| &r.event.event_type))
            .bind(rows.iter().map(|r| r.event.schema_version).collect::<Vec<i32>>())
            .bind(column(rows, |r| &r.event.payload))
            .bind(column(rows, |r| &r.event.metadata))
            .bind(at)
            .fetch_all(&mut **self.0)
            .await?;
        returned
            .into_iter()
            .map(|row| {
                Ok(Inserted {
                    event_id: row.try_get(0)?,
                    version: row.try_get::<i64, _>(1)? as u64,
                    position: Position { tx: row.try_get(2)?, seq: row.try_get(3)? },
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
        let row = sqlx::query(INSERT_EVENT)
            .bind(event.event_id)
            .bind(stream_id)
            .bind(version as i64)
            .bind(event.event_type.as_str())
            .bind(event.schema_version)
            .bind(event.payload.as_str())
            .bind(event.metadata.as_str())
            .bind(at)
            .fetch_one(&mut **self.0)
            .await?;
        Ok(Position { tx: row.try_get("tx_id")?, seq: row.try_get("position")? })
    }

    async fn put_pii(&mut self, row: &PiiRow) -> Result<(), sqlx::Error> {
        let query = sqlx::query(UPSERT_PII).bind(&row.subject).bind(&row.field).bind(&row.sealed);
        query.execute(&mut **self.0).await.map(drop)
    }

    async fn find(&mut self, event_ids: &[Uuid]) -> Result<Vec<StoredId>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT event_id, stream_id, version, tx_id, position FROM events WHERE event_id = ANY($1)")
                .bind(event_ids)
                .fetch_all(&mut **self.0)
                .await?;
        rows.into_iter()
            .map(|row| {
                Ok(StoredId {
                    event_id: row.try_get("event_id")?,
                    stream_id: row.try_get("stream_id")?,
                    version: row.try_get::<i64, _>("version")? as u64,
                    position: Position { tx: row.try_get("tx_id")?, seq: row.try_get("position")? },
                })
            })
            .collect()
    }

    async fn exec(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::query(sql).execute(&mut **self.0).await.map(drop)
    }
}

const SELECT_EVENTS: &str = "SELECT tx_id, position, event_id, stream_id, version, event_type, schema_version, \
                             payload, metadata, recorded_at FROM events";

fn decode(row: PgRow) -> Result<RecordedEvent, StoreError> {
    Ok(RecordedEvent {
        position: Position { tx: row.try_get("tx_id")?, seq: row.try_get("position")? },
        event_id: row.try_get("event_id")?,
        stream_id: row.try_get("stream_id")?,
        version: row.try_get::<i64, _>("version")? as u64,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        payload: row.try_get::<Json<Box<RawValue>>, _>("payload")?.0,
        metadata: row.try_get::<Json<Box<RawValue>>, _>("metadata")?.0,
        recorded_at: row.try_get("recorded_at")?,
    })
}

impl EventStore for PostgresStore {
    async fn append_encoded(
        &self,
        requests: Vec<EncodedAppend>,
    ) -> Result<Vec<Result<AppendResult, StoreError>>, StoreError> {
        let mut tx = self.begin_write().await?;
        let results = append_all(&mut PgAppend(&mut tx, Owner::Store), &requests, &self.paths).await?;
        match crate::commit_timing::timed_commit(tx.commit()).await {
            Ok(()) => Ok(results),
            Err(e) if commit_outcome_unknown(&e) => self.settle_commit(results, e).await,
            Err(e) => Err(e.into()),
        }
    }

    async fn read_stream(&self, stream_id: &str, from_version: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!("{SELECT_EVENTS} WHERE stream_id = $1 AND version >= $2 ORDER BY version");
        let rows = sqlx::query(&sql).bind(stream_id).bind(from_version as i64).fetch_all(&self.pool).await?;
        rows.into_iter().map(decode).collect()
    }

    async fn read_stream_page(&self, stream_id: &str, page: StreamPage) -> Result<Vec<RecordedEvent>, StoreError> {
        let (condition, from, limit) = page.sql();
        let sql = format!("{SELECT_EVENTS} WHERE stream_id = $1 AND {condition} LIMIT $3");
        let rows = sqlx::query(&sql).bind(stream_id).bind(from).bind(limit).fetch_all(&self.pool).await?;
        rows.into_iter().map(decode).collect()
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!("{SELECT_EVENTS} {LOG_AFTER}");
        let rows = sqlx::query(&sql).bind(after.tx).bind(after.seq).bind(limit as i64).fetch_all(&self.pool).await?;
        rows.into_iter().map(decode).collect()
    }
}

/// The log in order after `($1, $2)`, at most `$3` events, up to the horizon: only transactions
/// that ended before every one still running began, so a page never skips a commit that lands
/// behind it.
const LOG_AFTER: &str = "WHERE (tx_id, position) > ($1, $2)
       AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
     ORDER BY tx_id, position LIMIT $3";

impl PostgresStore {
    /// [`EventStore::read_all`] as a [`LogPage`]: no metadata, and the payload as Postgres
    /// prints it, not parsed here (the reader parses it once into its event), in one buffer for
    /// the page rather than several allocations per event. The in-memory model's tail reads the
    /// log this way: it needs no metadata, which Postgres would render and send and sqlx would
    /// parse for each event.
    pub(crate) async fn read_log_page(&self, after: Position, limit: usize) -> Result<LogPage, StoreError> {
        let sql = format!(
            "SELECT tx_id, position, event_id, stream_id, version, event_type, schema_version, payload::text, \
             recorded_at FROM events {LOG_AFTER}"
        );
        let rows = sqlx::query(&sql).bind(after.tx).bind(after.seq).bind(limit as i64).fetch_all(&self.pool).await?;
        let mut page = LogPage::with_capacity(rows.len());
        for row in &rows {
            page.push(LogEvent {
                position: Position { tx: row.try_get(0)?, seq: row.try_get(1)? },
                event_id: row.try_get(2)?,
                stream_id: row.try_get(3)?,
                version: row.try_get::<i64, _>(4)? as u64,
                event_type: row.try_get(5)?,
                schema_version: row.try_get(6)?,
                payload: row.try_get(7)?,
                recorded_at: row.try_get(8)?,
            });
        }
        Ok(page)
    }
}
