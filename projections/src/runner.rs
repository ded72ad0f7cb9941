//! Catch-up then live tail, for the in-memory model and for each SQL projection. Tailing polls
//! with backoff; a commit signal from the writer is only a wake-up hint, never the source of truth.

use crate::{status, HotModel, ProjectionError, SqlProjection};
use licensd_domain::AnyEvent;
use licensd_store::{EventStore, LogPage, Position, ProjectionMove, RecordedEvent, Statement, Store};
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
                if n >= config.batch {
                    // A full page: more may be waiting already.
                    continue;
                }
                if !config.pace.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(config.pace) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                // A part of a page: the log held nothing more when it was read. Reading again at
                // once would nearly always find nothing (the in-memory model's tail did so after
                // every commit: two reads each); the next commit's wake-up, or the shortest wait,
                // comes first.
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

/// Reads the log after `from` in pages of `batch` on a task of its own, each page passed through
/// `prepare` (decoding, for a reader that wants it off its own thread) and sent on, two ahead at
/// most; the task ends at the end of the log, on an error (returned by its handle), or when the
/// receiver is dropped.
fn read_pages<T: Send + 'static>(
    store: &Store,
    from: Position,
    batch: usize,
    prepare: fn(Vec<RecordedEvent>) -> Result<T, ProjectionError>,
) -> (tokio::sync::mpsc::Receiver<T>, tokio::task::JoinHandle<Result<(), ProjectionError>>) {
    let (pages_in, pages) = tokio::sync::mpsc::channel::<T>(2);
    let store = store.clone();
    let reader = tokio::spawn(async move {
        let mut position = from;
        loop {
            let page = store.read_all(position, batch).await?;
            let Some(last) = page.last() else { return Ok(()) };
            position = last.position;
            if pages_in.send(prepare(page)?).await.is_err() {
                return Ok(());
            }
        }
    });
    (pages, reader)
}

/// A page of the log with each event decoded (`None`: a type this version does not know).
struct Page {
    events: Vec<RecordedEvent>,
    decoded: Vec<Option<AnyEvent>>,
}

impl Page {
    fn decode(events: Vec<RecordedEvent>) -> Result<Self, ProjectionError> {
        let decoded = events
            .iter()
            .map(|event| {
                AnyEvent::decode(&event.stream_id, &event.event_type, event.schema_version, &event.payload)
                    .map_err(|source| ProjectionError::Decode { position: event.position, source })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { events, decoded })
    }
}

/// A page of the log as the in-memory model reads it ([`Store::scan_log`] at start-up,
/// [`Store::read_log_page`] in its tail) with each event decoded from the text borrowed from the
/// page (`None`: a type this version does not know).
struct ScannedPage {
    page: LogPage,
    decoded: Vec<Option<AnyEvent>>,
}

impl ScannedPage {
    fn decode(page: LogPage) -> Result<Self, ProjectionError> {
        let decoded = page
            .events()
            .map(|event| {
                AnyEvent::decode_text(event.stream_id, event.event_type, event.schema_version, event.payload)
                    .map_err(|source| ProjectionError::Decode { position: event.position, source })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { page, decoded })
    }

    fn apply_to(&self, model: &HotModel) {
        model.apply_decoded(self.page.events().zip(self.decoded.iter().map(Option::as_ref)));
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
            let page = self.store.read_log_page(self.model.position(), self.config.batch).await?;
            let page = ScannedPage::decode(page)?;
            page.apply_to(&self.model);
            Ok(page.page.len())
        };
        let stepped = stepped.await;
        match &stepped {
            Ok(n) => status::stepped(HOT, self.model.position(), *n < self.config.batch),
            Err(e) => status::failed(HOT, e),
        }
        stepped
    }

    /// Applies everything currently readable; returns how many events that was. The next page
    /// is read and decoded on the reader's task while this one is applied, so a start-up or
    /// rebuild keeps two cores busy.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let caught_up = self.read_ahead().await;
        match &caught_up {
            Ok(_) => status::stepped(HOT, self.model.position(), true),
            Err(e) => status::failed(HOT, e),
        }
        caught_up
    }

    async fn read_ahead(&self) -> Result<u64, ProjectionError> {
        let (mut pages, reader) = self.store.scan_log(self.model.position(), self.config.batch, ScannedPage::decode);
        let mut applied = 0;
        while let Some(page) = pages.recv().await {
            // A page that does not decode stops the reader (the receiver is dropped on return).
            let page = page?;
            page.apply_to(&self.model);
            applied += page.page.len() as u64;
        }
        reader.await.map_err(|e| ProjectionError::Task(e.to_string()))??;
        Ok(applied)
    }

    pub async fn run(self, wake: watch::Receiver<u64>, stop: watch::Receiver<bool>) {
        tail(HOT, || self.step(), self.config, wake, stop).await
    }
}

/// Feeds SQL projections from their checkpoints with one reader: each pace reads a page of the
/// log once, decodes each event once, and commits every projection's rows and checkpoint move in
/// one transaction. Each checkpoint still moves compare-and-set with its own rows, so a crash
/// never applies an event twice or skips one, and a projection another process moved (a rebuild,
/// an on-demand catch-up) is left out of the commit and re-read next pace.
#[derive(Clone)]
pub struct SqlRunner {
    store: Store,
    projections: Arc<[Arc<dyn SqlProjection>]>,
    config: TailConfig,
}

/// What committing a page did: whether any projection moved, and whether all with events in
/// the page did.
struct Committed {
    any: bool,
    all: bool,
}

/// One projection's part of a pace.
struct Share<'a> {
    projection: &'a dyn SqlProjection,
    from: Position,
}

impl SqlRunner {
    /// A runner for one projection (on-demand catch-ups, `rebuild --projection`).
    pub fn new(store: Store, projection: Arc<dyn SqlProjection>, config: TailConfig) -> Self {
        Self::shared(store, vec![projection], config)
    }

    /// One runner for several projections, sharing each page of the log.
    pub fn shared(store: Store, projections: Vec<Arc<dyn SqlProjection>>, config: TailConfig) -> Self {
        Self { store, projections: projections.into(), config }
    }

    /// The name the runner's log lines carry: its projection's, or "sql" for a shared one.
    pub fn name(&self) -> &'static str {
        match &*self.projections {
            [one] => one.name(),
            _ => "sql",
        }
    }

    /// Projects one page. A checkpoint from another version of a projection means its meaning
    /// changed: its tables are emptied and the log replayed into it from the start.
    async fn step(&self) -> Result<usize, ProjectionError> {
        let stepped = self.project_page().await;
        if let Err(e) = &stepped {
            for p in self.projections.iter() {
                status::failed(p.name(), e);
            }
        }
        stepped
    }

    /// Each projection's checkpoint, after resetting those whose version changed; `None` when
    /// one was reset (the step made progress and the next reads afresh).
    async fn checkpoints(&self) -> Result<Option<Vec<Share<'_>>>, ProjectionError> {
        let stored = self.store.load_checkpoints().await?;
        let mut shares = Vec::with_capacity(self.projections.len());
        for p in self.projections.iter() {
            match stored.get(p.name()) {
                Some(c) if c.version == p.version() => shares.push(Share { projection: p.as_ref(), from: c.position }),
                found => {
                    if found.is_some() {
                        tracing::info!(
                            projection = p.name(),
                            version = p.version(),
                            "projection version changed; rebuilding"
                        );
                    }
                    self.store.reset_projection(p.name(), p.version(), p.tables()).await?;
                    return Ok(None);
                }
            }
        }
        Ok(Some(shares))
    }

    async fn project_page(&self) -> Result<usize, ProjectionError> {
        let Some(mut shares) = self.checkpoints().await? else { return Ok(1) };
        let Some(from) = shares.iter().map(|s| s.from).min() else { return Ok(0) };
        let page = Page::decode(self.store.read_all(from, self.config.batch).await?)?;
        if page.events.is_empty() {
            for share in &shares {
                status::stepped(share.projection.name(), share.from, true);
            }
            return Ok(0);
        }
        let caught_up = page.events.len() < self.config.batch;
        let committed = self.commit_page(&mut shares, &page, caught_up).await?;
        Ok(if committed.any { page.events.len() } else { 1 })
    }

    /// Commits one page for every share with events in it, in one transaction, and moves the
    /// positions of those that moved.
    async fn commit_page(
        &self,
        shares: &mut [Share<'_>],
        page: &Page,
        caught_up: bool,
    ) -> Result<Committed, ProjectionError> {
        let Some(last) = page.events.last().map(|e| e.position) else { return Ok(Committed { any: false, all: true }) };
        let mut moves = Vec::with_capacity(shares.len());
        let mut skipped = Vec::with_capacity(shares.len());
        for share in shares.iter().filter(|s| s.from < last) {
            let (statements, unknown) = self.statements_of(share, page).await?;
            let p = share.projection;
            moves.push(ProjectionMove { name: p.name(), version: p.version(), from: share.from, to: last, statements });
            skipped.push(unknown);
        }
        let moved = self.store.commit_projections(&moves).await?;
        for ((m, moved), unknown) in moves.iter().zip(&moved).zip(skipped) {
            // Not moved: someone else (a rebuild, another node) advanced it; the next step re-reads.
            if *moved {
                status::skipped(m.name, unknown);
                status::stepped(m.name, m.to, caught_up);
                if let Some(share) = shares.iter_mut().find(|s| s.projection.name() == m.name) {
                    share.from = m.to;
                }
            }
        }
        Ok(Committed { any: moved.iter().any(|m| *m), all: moved.iter().all(|m| *m) })
    }

    /// One projection's writes for the events of the page after its checkpoint, and how many of
    /// those it skipped as unknown.
    async fn statements_of(&self, share: &Share<'_>, page: &Page) -> Result<(Vec<Statement>, u64), ProjectionError> {
        let p = share.projection;
        let state = match p.state_query() {
            // Read after the checkpoint: if another process moves it meanwhile, this pace's
            // compare-and-set fails and nothing decided from these rows is committed.
            Some(query) => self.store.query_rows(query, &[]).await?,
            None => Vec::new(),
        };
        let mut pace = p.pace(&state);
        let (mut statements, mut unknown) = (Vec::new(), 0);
        for (event, decoded) in page.events.iter().zip(&page.decoded).filter(|(e, _)| e.position > share.from) {
            match (decoded, pace.as_mut()) {
                (Some(decoded), Some(pace)) => statements.extend(pace.statements(event, decoded)),
                (Some(decoded), None) => statements.extend(p.statements(event, decoded)),
                (None, _) => unknown += 1,
            }
        }
        if let Some(pace) = pace.as_mut() {
            statements.extend(pace.finish());
        }
        Ok((statements, unknown))
    }

    /// Projects everything currently readable; returns how many events that was. The next page
    /// is read and decoded while this one commits (start-up and rebuilds keep two cores busy).
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let caught_up = self.read_ahead().await;
        if let Err(e) = &caught_up {
            for p in self.projections.iter() {
                status::failed(p.name(), e);
            }
        }
        caught_up
    }

    /// Starts over from the stored checkpoints after a projection was reset, or moved by
    /// someone else (its page was not committed for it).
    async fn read_ahead(&self) -> Result<u64, ProjectionError> {
        let mut projected = 0;
        'from_checkpoints: loop {
            let Some(mut shares) = self.checkpoints().await? else { continue };
            let Some(from) = shares.iter().map(|s| s.from).min() else { return Ok(projected) };
            let batch = self.config.batch;
            // Dropping `pages` (starting over, or an error) ends the reader at its next page.
            let (mut pages, reader) = read_pages(&self.store, from, batch, Page::decode);
            while let Some(page) = pages.recv().await {
                let committed = self.commit_page(&mut shares, &page, page.events.len() < batch).await?;
                if committed.any {
                    projected += page.events.len() as u64;
                }
                if !committed.all {
                    continue 'from_checkpoints;
                }
            }
            reader.await.map_err(|e| ProjectionError::Task(e.to_string()))??;
            for share in &shares {
                status::stepped(share.projection.name(), share.from, true);
            }
            return Ok(projected);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One read per commit: after a part of a page the tail waits for the next wake-up instead
    /// of reading again at once. (The waits are long here, so only wake-ups make it read.)
    #[tokio::test]
    async fn a_partial_page_waits_for_the_next_commit_instead_of_reading_again() {
        let config = TailConfig {
            batch: 10,
            min_idle: Duration::from_secs(600),
            max_idle: Duration::from_secs(600),
            ..Default::default()
        };
        let (wake_in, wake) = watch::channel(0u64);
        let (stop_in, stop) = watch::channel(false);
        let reads = Arc::new(AtomicUsize::new(0));
        // What the next read finds, and a signal after each read.
        let pending = Arc::new(AtomicUsize::new(0));
        let (read_in, mut read) = tokio::sync::mpsc::unbounded_channel();
        let step = {
            let (reads, pending) = (reads.clone(), pending.clone());
            move || {
                reads.fetch_add(1, Ordering::SeqCst);
                let found = pending.swap(0, Ordering::SeqCst);
                let _ = read_in.send(found);
                async move { Ok::<usize, ProjectionError>(found) }
            }
        };
        let tail = tokio::spawn(async move { tail("test", step, config, wake, stop).await });
        assert_eq!(read.recv().await, Some(0), "the first read, at start");
        for commit in 1..=5u64 {
            pending.store(3, Ordering::SeqCst);
            wake_in.send_replace(commit);
            assert_eq!(read.recv().await, Some(3), "commit {commit} is read");
            // Give a needless second read every chance to happen before counting.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(reads.load(Ordering::SeqCst), 1 + commit as usize, "one read per commit");
        }
        // A full page is followed at once by another read.
        pending.store(10, Ordering::SeqCst);
        wake_in.send_replace(6);
        assert_eq!(read.recv().await, Some(10));
        assert_eq!(read.recv().await, Some(0), "the read after a full page");
        stop_in.send_replace(true);
        tail.await.unwrap();
    }
}
