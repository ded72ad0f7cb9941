//! Raw appends: how many events per second licensd's group-commit writer makes durable, next to
//! the least any program must do for the same rows on the same database file: one prepared
//! multi-row `INSERT` per transaction of the same batch size, committed with the same
//! durability (SQLite `synchronous=full`, Postgres `fsync` on). The ratio says how close the
//! writer gets to what the disk and the database allow, whatever the machine.

use licensd_commands::{Writer, WriterConfig};
use licensd_store::{AppendRequest, ExpectedVersion, NewEvent, Store, StoreOptions};
use serde::Serialize;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What one raw-append run measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendFigures {
    pub backend: &'static str,
    pub events: usize,
    pub batch: usize,
    /// Events per second through `WriterHandle::append`, one event per request, enough callers
    /// waiting that every batch can fill.
    pub writer_events_per_second: f64,
    /// Mean requests per committed batch during the writer run.
    pub writer_mean_batch: f64,
    /// Events per second through a plain loop of one multi-row `INSERT` per transaction.
    pub plain_events_per_second: f64,
}

impl AppendFigures {
    pub fn ratio(&self) -> f64 {
        self.writer_events_per_second / self.plain_events_per_second.max(1e-9)
    }
}

/// Streams the events spread over (one per license, as licensd keeps).
const STREAMS: usize = 4096;

fn event(i: usize) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "ValidationBilled".into(),
        schema_version: 1,
        payload: json!({ "nonce": format!("n-{i:016}"), "amount": 1, "hwid": "0".repeat(43) }),
        metadata: json!({ "actor": "client", "requestId": uuid::Uuid::now_v7() }),
    }
}

/// Runs the plain loop, then the writer, on the (fresh, migrated) database at `url`.
pub async fn run(url: &str, backend: &'static str, events: usize, batch: usize) -> anyhow::Result<AppendFigures> {
    let store = Store::connect(url, &StoreOptions::durable()).await?;
    store.migrate().await?;
    store.close().await;
    let plain_events_per_second = plain::run(url, events, batch).await?;
    let (writer_events_per_second, writer_mean_batch) = through_writer(url, events, batch).await?;
    Ok(AppendFigures { backend, events, batch, writer_events_per_second, writer_mean_batch, plain_events_per_second })
}

/// `events` appends of one event each, from twice `batch` callers at a time.
async fn through_writer(url: &str, events: usize, batch: usize) -> anyhow::Result<(f64, f64)> {
    let store = Store::connect(url, &StoreOptions::durable()).await?;
    let config = WriterConfig { queue_capacity: 4 * batch, max_batch: batch, ..WriterConfig::default() };
    let (writer, task) = Writer::spawn(store.clone(), config);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..2 * batch {
        let (writer, next) = (writer.clone(), next.clone());
        callers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return Ok::<_, anyhow::Error>(());
                }
                let request =
                    AppendRequest::new(format!("writer-{}", i % STREAMS), ExpectedVersion::Any, vec![event(i)]);
                writer.append(request).await.map_err(|e| anyhow::anyhow!("append failed: {e}"))?;
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats = writer.stats();
    let mean = stats.requests.load(Ordering::Relaxed) as f64 / stats.batches.load(Ordering::Relaxed).max(1) as f64;
    writer.close();
    drop(writer);
    task.await?;
    store.close().await;
    Ok((events as f64 / seconds, mean))
}

/// The baseline: the rows made up front, then `BEGIN; INSERT ... VALUES (..), (..); COMMIT` in a
/// loop on one connection, the statement prepared once.
mod plain {
    use super::{event, STREAMS};
    use sqlx::{Connection, Executor};
    use std::time::Instant;

    const COLUMNS: &str =
        "INSERT INTO events (event_id, stream_id, version, event_type, schema_version, payload, metadata, recorded_at) ";

    fn statement(rows: usize, postgres: bool) -> String {
        let mut sql = String::from(COLUMNS);
        sql.push_str("VALUES ");
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            let p = |i: usize| format!("${}", row * 8 + i);
            let json = if postgres { "::jsonb" } else { "" };
            let uuid = if postgres { "::uuid" } else { "" };
            sql.push_str(&format!(
                "({}{uuid}, {}, {}, {}, {}, {}{json}, {}{json}, {})",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5),
                p(6),
                p(7),
                p(8)
            ));
        }
        sql
    }

    struct Row {
        event_id: String,
        stream_id: String,
        version: i64,
        event_type: String,
        payload: String,
        metadata: String,
    }

    fn rows(events: usize) -> Vec<Row> {
        let mut versions = vec![0i64; STREAMS];
        (0..events)
            .map(|i| {
                let e = event(i);
                versions[i % STREAMS] += 1;
                Row {
                    event_id: e.event_id.to_string(),
                    stream_id: format!("plain-{}", i % STREAMS),
                    version: versions[i % STREAMS],
                    event_type: e.event_type,
                    payload: e.payload.to_string(),
                    metadata: e.metadata.to_string(),
                }
            })
            .collect()
    }

    macro_rules! insert_loop {
        ($connection:expr, $rows:expr, $batch:expr, $postgres:expr) => {{
            let sql = statement($batch, $postgres);
            let started = Instant::now();
            for chunk in $rows.chunks($batch) {
                let sql = if chunk.len() == $batch { sql.clone() } else { statement(chunk.len(), $postgres) };
                let mut tx = $connection.begin().await?;
                let mut query = sqlx::query(&sql);
                let now = chrono::Utc::now();
                for row in chunk {
                    query = query
                        .bind(&row.event_id)
                        .bind(&row.stream_id)
                        .bind(row.version)
                        .bind(&row.event_type)
                        .bind(1i32)
                        .bind(&row.payload)
                        .bind(&row.metadata)
                        .bind(now);
                }
                tx.execute(query).await?;
                tx.commit().await?;
            }
            started.elapsed().as_secs_f64()
        }};
    }

    pub async fn run(url: &str, events: usize, batch: usize) -> anyhow::Result<f64> {
        let rows = rows(events);
        let seconds = if url.starts_with("sqlite:") {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
            use std::str::FromStr;
            let options = SqliteConnectOptions::from_str(url)?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                // As licensd's writer: the WAL is copied back by a separate checkpointer, never
                // inside a commit.
                .pragma("wal_autocheckpoint", "0");
            let mut connection = sqlx::SqliteConnection::connect_with(&options).await?;
            insert_loop!(connection, rows, batch, false)
        } else {
            let mut connection = sqlx::PgConnection::connect(url).await?;
            insert_loop!(connection, rows, batch, true)
        };
        Ok(events as f64 / seconds)
    }
}
