//! Catch-up then live tail, for the in-memory model and for each SQL projection. Tailing polls
//! with backoff; a commit signal from the writer is only a wake-up hint, never the source of truth.

use crate::{status, HotModel, ProjectionError, SqlProjection};
use licensd_domain::AnyEvent;
use licensd_store::{EventStore, RecordedEvent, Store};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The in-memory model's name in status reports.
pub const HOT: &str = "hot";

#[derive(Debug, Clone, Copy)]
pub struct TailConfig {
    /// Events read per step.
    pub batch: usize,
    /// First idle wait; doubles while idle up to `max_idle`.
    pub min_idle: Duration,
    pub max_idle: Duration,
    /// After catching up, wait this long before the next step, so the commits of that time are
    /// projected in one transaction (zero: follow every commit at once).
    pub pace: Duration,
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            batch: 1000,
            min_idle: Duration::from_millis(5),
            max_idle: Duration::from_millis(250),
            pace: Duration::ZERO,
        }
    }
}

/// Runs `step` until `stop` turns true: immediately again after progress, else after a wait
/// that `wake` may cut short. Errors are logged and retried after the longest wait.
async fn tail<F, Fut>(
    name: &str,
    mut step: F,
    config: TailConfig,
    mut wake: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, ProjectionError>>,
{
    let mut idle = config.min_idle;
    while !*stop.borrow() {
        match step().await {
            Ok(0) => {}
            Ok(n) => {
                idle = config.min_idle;
                if n < config.batch && !config.pace.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(config.pace) => {}
                        _ = stop.changed() => {}
                    }
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(projection = name, error = %e, "projection step failed; retrying");
                idle = config.max_idle;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(idle) => idle = (idle * 2).min(config.max_idle),
            _ = wake.changed() => idle = config.min_idle,
            _ = stop.changed() => {}
        }
    }
    // The writer has committed its last batch before the workers are stopped: follow it to the
    // end, so a graceful restart begins with every read model caught up.
    if let Err(e) = drain(step).await {
        tracing::warn!(projection = name, error = %e, "projection not caught up at shutdown; it resumes on start");
    }
    tracing::debug!(projection = name, "projection stopped");
}

/// Repeats `step` until it reports no progress; returns the events processed.
async fn drain<F, Fut>(mut step: F) -> Result<u64, ProjectionError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, ProjectionError>>,
{
    let mut total = 0;
    loop {
        match step().await? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

/// Feeds the in-memory [`HotModel`] from the log.
#[derive(Clone)]
pub struct HotRunner {
    store: Store,
    model: Arc<HotModel>,
    config: TailConfig,
}

impl HotRunner {
    pub fn new(store: Store, model: Arc<HotModel>, config: TailConfig) -> Self {
        Self { store, model, config }
    }

    async fn step(&self) -> Result<usize, ProjectionError> {
        let stepped = async {
            let events = self.store.read_all(self.model.position(), self.config.batch).await?;
            for event in &events {
                self.model.apply(event)?;
            }
            Ok(events.len())
        };
        let stepped = stepped.await;
        match &stepped {
            Ok(n) => status::stepped(HOT, self.model.position(), *n < self.config.batch),
            Err(e) => status::failed(HOT, e),
        }
        stepped
    }

    /// Applies everything currently readable; returns how many events that was. The next page
    /// is read (and its JSON parsed) while this one is applied, so a start-up or rebuild keeps
    /// two cores busy.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let caught_up = self.read_ahead().await;
        match &caught_up {
            Ok(_) => status::stepped(HOT, self.model.position(), true),
            Err(e) => status::failed(HOT, e),
        }
        caught_up
    }

    async fn read_ahead(&self) -> Result<u64, ProjectionError> {
        let (pages_in, mut pages) = tokio::sync::mpsc::channel::<Vec<RecordedEvent>>(2);
        let (store, batch, from) = (self.store.clone(), self.config.batch, self.model.position());
        let reader = tokio::spawn(async move {
            let mut position = from;
            loop {
                let page = store.read_all(position, batch).await?;
                let Some(last) = page.last() else { return Ok::<_, ProjectionError>(()) };
                position = last.position;
                if pages_in.send(page).await.is_err() {
                    return Ok(());
                }
            }
        });
        let mut applied = 0;
        while let Some(page) = pages.recv().await {
            for event in &page {
                self.model.apply(event)?;
            }
            applied += page.len() as u64;
        }
        reader.await.map_err(|e| ProjectionError::Task(e.to_string()))??;
        Ok(applied)
    }

    pub async fn run(self, wake: watch::Receiver<u64>, stop: watch::Receiver<bool>) {
        tail(HOT, || self.step(), self.config, wake, stop).await
    }
}

/// Feeds one [`SqlProjection`] from its checkpoint.
#[derive(Clone)]
pub struct SqlRunner {
    store: Store,
    projection: Arc<dyn SqlProjection>,
    config: TailConfig,
}

impl SqlRunner {
    pub fn new(store: Store, projection: Arc<dyn SqlProjection>, config: TailConfig) -> Self {
        Self { store, projection, config }
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// Projects one batch. A checkpoint from another version of the projection means its
    /// meaning changed: the tables are emptied and the log replayed from the start.
    async fn step(&self) -> Result<usize, ProjectionError> {
        let stepped = self.project_batch().await;
        if let Err(e) = &stepped {
            status::failed(self.name(), e);
        }
        stepped
    }

    async fn project_batch(&self) -> Result<usize, ProjectionError> {
        let p = &self.projection;
        let checkpoint = match self.store.load_checkpoint(p.name()).await? {
            Some(c) if c.version == p.version() => c,
            found => {
                if found.is_some() {
                    tracing::info!(
                        projection = p.name(),
                        version = p.version(),
                        "projection version changed; rebuilding"
                    );
                }
                self.store.reset_projection(p.name(), p.version(), p.tables()).await?;
                return Ok(1);
            }
        };
        let events = self.store.read_all(checkpoint.position, self.config.batch).await?;
        let Some(last) = events.last() else {
            status::stepped(p.name(), checkpoint.position, true);
            return Ok(0);
        };
        let (mut statements, mut skipped) = (Vec::new(), 0);
        for event in &events {
            let decoded = AnyEvent::decode(&event.stream_id, &event.event_type, event.schema_version, &event.payload)
                .map_err(|source| ProjectionError::Decode { position: event.position, source })?;
            match decoded {
                Some(decoded) => statements.extend(p.statements(event, &decoded)),
                None => skipped += 1,
            }
        }
        let moved = self
            .store
            .commit_projection(p.name(), p.version(), checkpoint.position, last.position, &statements)
            .await?;
        if moved {
            status::skipped(p.name(), skipped);
            status::stepped(p.name(), last.position, events.len() < self.config.batch);
        }
        // Not moved: someone else (a rebuild, another node) advanced it; the next step re-reads.
        Ok(if moved { events.len() } else { 1 })
    }

    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        drain(|| self.step()).await
    }

    pub async fn run(self, wake: watch::Receiver<u64>, stop: watch::Receiver<bool>) {
        let name = self.name();
        tail(name, || self.step(), self.config, wake, stop).await
    }
}

/// Empties a SQL projection and replays the whole log into it.
pub async fn rebuild_sql(store: &Store, projection: Arc<dyn SqlProjection>) -> Result<u64, ProjectionError> {
    store.reset_projection(projection.name(), projection.version(), projection.tables()).await?;
    SqlRunner::new(store.clone(), projection, TailConfig::default()).catch_up().await
}

/// SHA-256 over a SQL projection's canonical rows.
pub async fn sql_projection_hash(store: &Store, projection: &dyn SqlProjection) -> Result<String, ProjectionError> {
    let mut hasher = Sha256::new();
    for query in projection.canonical_queries() {
        for row in store.query_text(query, &[]).await? {
            hasher.update(row.unwrap_or_default().as_bytes());
            hasher.update(b"\n");
        }
    }
    Ok(hex::encode(hasher.finalize()))
}
