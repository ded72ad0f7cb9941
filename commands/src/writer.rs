//! Group commit: appends from many requests are queued and written in one transaction each
//! round, so one fsync acknowledges a whole batch. A reply is sent only after the commit.

use crate::CommandError;
use licensd_store::{AppendRequest, AppendResult, EventStore, Store, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Appends waiting beyond this many are refused at once (load shedding, not queueing forever).
    pub queue_capacity: usize,
    /// Most requests committed in one transaction.
    pub max_batch: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self { queue_capacity: 4096, max_batch: 256 }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub requests: AtomicU64,
    pub events: AtomicU64,
    pub failed_batches: AtomicU64,
}

struct Job {
    request: AppendRequest,
    reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

#[derive(Clone, Debug)]
pub struct WriterHandle {
    queue: mpsc::Sender<Job>,
    closing: Arc<watch::Sender<bool>>,
    /// Counts committed batches: a wake-up hint for the projection tails.
    commits: Arc<watch::Sender<u64>>,
    stats: Arc<WriterStats>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("stream_id", &self.request.stream_id).finish()
    }
}

pub struct Writer;

impl Writer {
    pub fn spawn(store: Store, config: WriterConfig) -> (WriterHandle, JoinHandle<()>) {
        let (queue, jobs) = mpsc::channel(config.queue_capacity.max(1));
        let (closing, closed) = watch::channel(false);
        let stats = Arc::new(WriterStats::default());
        let commits = Arc::new(watch::channel(0).0);
        let task = tokio::spawn(run(store, jobs, closed, config.max_batch.max(1), stats.clone(), commits.clone()));
        (WriterHandle { queue, closing: Arc::new(closing), commits, stats }, task)
    }
}

impl WriterHandle {
    /// Queues an append and waits for its commit.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendResult, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.queue.try_send(Job { request, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CommandError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => CommandError::ShuttingDown,
        })?;
        Ok(answer.await.map_err(|_| CommandError::ShuttingDown)??)
    }

    /// Stops taking new appends; everything already queued is still committed.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Appends waiting for the next batch.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

async fn run(
    store: Store,
    mut jobs: mpsc::Receiver<Job>,
    mut closed: watch::Receiver<bool>,
    max_batch: usize,
    stats: Arc<WriterStats>,
    commits: Arc<watch::Sender<u64>>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut draining = false;
    loop {
        let first = if draining {
            jobs.recv().await
        } else {
            tokio::select! {
                job = jobs.recv() => job,
                _ = closed.changed() => {
                    // Refuse new work but drain what is queued: recv() then ends with None.
                    jobs.close();
                    draining = true;
                    continue;
                }
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit(&store, &mut batch, &stats).await;
        commits.send_modify(|n| *n += 1);
    }
    tracing::info!("event writer drained and stopped");
}

async fn commit(store: &Store, batch: &mut Vec<Job>, stats: &WriterStats) {
    let (requests, replies): (Vec<_>, Vec<_>) = batch.drain(..).map(|job| (job.request, job.reply)).unzip();
    let events: u64 = requests.iter().map(|r| r.events.len() as u64).sum();
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.requests.fetch_add(requests.len() as u64, Ordering::Relaxed);
    match store.append_batch(requests).await {
        Ok(results) => {
            stats.events.fetch_add(events, Ordering::Relaxed);
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "append batch failed as a whole");
            for reply in replies {
                let _ = reply.send(Err(batch_error(&e)));
            }
        }
    }
}

/// What each request of a batch learns when the batch failed as a whole: the outcome is unknown
/// when the commit's was, else nothing of it was committed (a database that failed, not the
/// request: a value the database refuses fails only its own request, inside the batch).
fn batch_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::CommitUnknown(why) => StoreError::CommitUnknown(why.clone()),
        other => StoreError::Unavailable(other.to_string()),
    }
}
