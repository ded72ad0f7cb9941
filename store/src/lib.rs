//! The append-only event log behind one trait, on SQLite (embedded default) or Postgres, plus the
//! SQL plumbing the read models and the PII vault need.
//!
//! Concurrency control is optimistic: `UNIQUE(stream_id, version)` turns a lost race into
//! [`StoreError::WrongExpectedVersion`]; `UNIQUE(event_id)` turns a retried append into a no-op.

mod append;
mod backup;
mod commit_timing;
mod hot_path;
mod leases;
mod log_page;
mod pg_read_model;
mod postgres;
mod read_model;
mod relay_checkpoint;
mod sqlite;
mod sqlite_params;
mod sqlite_scan;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;
mod types;
mod wal_sync;

pub use append::UPSERT_PII;
pub use backup::{backup_sqlite, sqlite_event_lines, sqlite_files, sqlite_log_file};
pub use commit_timing::commit_timing_scope;
pub use hot_path::{hot_path_scope, hot_path_sql_reads};
pub use leases::{leases_held, set_lease_held};
pub use log_page::{LogEvent, LogPage};
pub use postgres::PostgresStore;
pub use read_model::{Checkpoint, ProjectionMove, SqlValue, Statement, TextRows};
pub use sqlite::SqliteStore;
pub use types::*;

use std::future::Future;

/// The event log. Both backends pass the same contract suite (`store/tests/contract.rs`).
pub trait EventStore: Send + Sync {
    /// Appends one stream's events atomically.
    fn append(&self, request: AppendRequest) -> impl Future<Output = Result<AppendResult, StoreError>> + Send {
        async move {
            let mut results = self.append_batch(vec![request]).await?;
            results.pop().unwrap_or(Err(StoreError::Unavailable("empty batch result".into())))
        }
    }

    /// Appends several requests in one transaction (group commit). Each request succeeds or
    /// fails on its own; the outer error means nothing of the batch was committed.
    fn append_batch(
        &self,
        requests: Vec<AppendRequest>,
    ) -> impl Future<Output = Result<Vec<Result<AppendResult, StoreError>>, StoreError>> + Send {
        self.append_encoded(requests.into_iter().map(AppendRequest::encode).collect())
    }

    /// [`Self::append_batch`] of requests their callers encoded already.
    fn append_encoded(
        &self,
        requests: Vec<EncodedAppend>,
    ) -> impl Future<Output = Result<Vec<Result<AppendResult, StoreError>>, StoreError>> + Send;

    /// Events of one stream with `version >= from_version`, in version order.
    fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// One page of a stream: up to `page.limit` events past `page.from` in `page`'s direction,
    /// read without the rest of the stream (a license's history, a page at a time).
    fn read_stream_page(
        &self,
        stream_id: &str,
        page: StreamPage,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Up to `limit` events after `after` in global order. An event committed late is never
    /// skipped: a reader only sees positions below which nothing can still appear.
    fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;
}

/// A connected event store of either backend; what the rest of licensd holds.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Store {
    /// Connects to `sqlite://path` (created if missing) or `postgres://...`.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(PostgresStore::connect(url, options).await?))
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteStore::connect(url, options).await?))
        } else {
            Err(StoreError::Config(format!(
                "unsupported database URL scheme (expected sqlite: or postgres://): {}",
                redact_url(url)
            )))
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.migrate().await,
            Self::Postgres(s) => s.migrate().await,
        }
    }

    /// How this store's append batches went (see [`AppendPaths`]).
    pub fn append_paths(&self) -> &AppendPaths {
        match self {
            Self::Sqlite(s) => s.append_paths(),
            Self::Postgres(s) => s.append_paths(),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Cheap liveness probe of the database connection.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.query_text("SELECT 'ok'", &[]).await.map(drop)
    }

    /// Background upkeep a server runs every second: the SQLite WAL checkpoint (Postgres
    /// checkpoints by itself).
    pub async fn maintain(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.checkpoint().await.map(drop),
            Self::Postgres(_) => Ok(()),
        }
    }

    /// Waits until what other processes committed before this call is readable by `read_all`
    /// (Postgres: the visibility horizon has passed it; SQLite: at once, one writer commits in
    /// order). Gives up after `timeout` and tells so (`false`): the caller then reads only what is
    /// visible, or refuses to.
    pub async fn settle(&self, timeout: std::time::Duration) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(true),
            Self::Postgres(s) => s.settle(timeout).await,
        }
    }

    /// Events after `after`, at most `limit`, as one [`LogPage`] (no metadata, the payload as
    /// stored text), visible by the same rule as [`EventStore::read_all`]'s: the read a tail
    /// that only applies events makes, with fewer copies.
    pub async fn read_log_page(&self, after: Position, limit: usize) -> Result<LogPage, StoreError> {
        match self {
            Self::Sqlite(s) => s.read_log_page(after, limit).await,
            Self::Postgres(s) => s.read_log_page(after, limit).await,
        }
    }

    /// Reads the log after `after` to its end in pages of `batch`, for readers of all of it
    /// (start-up, rebuilds), on a reader of its own: each page passes through `prepare` there
    /// (decoding, say) and on to the receiver, two ahead at most. The reader ends at the end of
    /// the log, on an error (its handle returns it), or once the receiver is dropped. On SQLite
    /// it runs on a blocking thread with a read-only connection of its own and copies each row
    /// once, straight from SQLite's row into the page.
    pub fn scan_log<T: Send + 'static>(
        &self,
        after: Position,
        batch: usize,
        mut prepare: impl FnMut(LogPage) -> T + Send + 'static,
    ) -> (tokio::sync::mpsc::Receiver<T>, tokio::task::JoinHandle<Result<(), StoreError>>) {
        let (pages_in, pages) = tokio::sync::mpsc::channel::<T>(2);
        let reader = match self {
            Self::Sqlite(s) => {
                let (log_file, visible_below) = (s.log_file().to_path_buf(), s.visible_below());
                tokio::task::spawn_blocking(move || {
                    let read = |page| pages_in.blocking_send(prepare(page)).is_ok();
                    sqlite_scan::scan(&log_file, after, batch, visible_below, read)
                })
            }
            Self::Postgres(s) => {
                let store = s.clone();
                tokio::spawn(async move {
                    let mut position = after;
                    loop {
                        let page = store.read_log_page(position, batch).await?;
                        let Some(last) = page.last_position() else { return Ok(()) };
                        position = last;
                        if pages_in.send(prepare(page)).await.is_err() {
                            return Ok(());
                        }
                    }
                })
            }
        };
        (pages, reader)
    }

    pub async fn close(&self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.close().await,
        }
    }
}

impl EventStore for Store {
    async fn append_encoded(
        &self,
        requests: Vec<EncodedAppend>,
    ) -> Result<Vec<Result<AppendResult, StoreError>>, StoreError> {
        match self {
            Self::Sqlite(s) => s.append_encoded(requests).await,
            Self::Postgres(s) => s.append_encoded(requests).await,
        }
    }

    async fn read_stream(&self, stream_id: &str, from_version: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        use tracing::Instrument;
        hot_path::note_read();
        let read = async {
            match self {
                Self::Sqlite(s) => s.read_stream(stream_id, from_version).await,
                Self::Postgres(s) => s.read_stream(stream_id, from_version).await,
            }
        };
        read.instrument(trace::step("store.read_stream")).await
    }

    async fn read_stream_page(&self, stream_id: &str, page: StreamPage) -> Result<Vec<RecordedEvent>, StoreError> {
        hot_path::note_read();
        match self {
            Self::Sqlite(s) => s.read_stream_page(stream_id, page).await,
            Self::Postgres(s) => s.read_stream_page(stream_id, page).await,
        }
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        hot_path::note_read();
        match self {
            Self::Sqlite(s) => s.read_all(after, limit).await,
            Self::Postgres(s) => s.read_all(after, limit).await,
        }
    }
}

/// Strips the password from a URL before it reaches a log line or an error message.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
