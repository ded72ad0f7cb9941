//! Group commit: appends from many requests are queued and written in one transaction each
//! round, so one fsync acknowledges a whole batch. A reply is sent only after the commit.
//!
//! The writer only talks to the database: each caller encodes its own events (JSON text) on its
//! own task before queueing them. Up to [`WriterConfig::pipeline`] batches are in flight at
//! once, so the next batch is taken and sent while the last one's commit is still syncing.

use crate::CommandError;
use licensd_store::{AppendRequest, AppendResult, EncodedAppend, EventStore, Store, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Appends waiting beyond this many are refused at once (load shedding, not queueing forever).
    pub queue_capacity: usize,
    /// Most requests committed in one transaction.
    pub max_batch: usize,
    /// Most batches in flight at once (1: each batch waits for the last one's commit).
    pub pipeline: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self { queue_capacity: 4096, max_batch: 256, pipeline: 2 }
    }
}

/// Counters for `/metrics`.
#[derive(Debug)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub requests: AtomicU64,
    pub events: AtomicU64,
    pub failed_batches: AtomicU64,
    /// Events per group-commit batch.
    pub batch_events: crate::histogram::Histogram,
    /// Seconds one batch's transaction took: its inserts, its commit and the commit's fsync.
    pub commit_seconds: crate::histogram::Histogram,
    /// Seconds the COMMIT statement alone took: the wait for durability (see
    /// `licensd_store::commit_timing_scope` for what that is on each backend).
    pub sync_seconds: crate::histogram::Histogram,
}

impl Default for WriterStats {
    fn default() -> Self {
        Self {
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            events: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
            batch_events: crate::histogram::Histogram::new(crate::histogram::SIZES),
            commit_seconds: crate::histogram::Histogram::new(crate::histogram::SECONDS),
            sync_seconds: crate::histogram::Histogram::new(crate::histogram::SECONDS),
        }
    }
}

struct Job {
    request: EncodedAppend,
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
        let task = tokio::spawn(run(store, jobs, closed, config, stats.clone(), commits.clone()));
        (WriterHandle { queue, closing: Arc::new(closing), commits, stats }, task)
    }
}

impl WriterHandle {
    /// Queues an append and waits for its commit. The events are encoded here, on the caller's
    /// task.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendResult, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.queue.try_send(Job { request: request.encode(), reply }).map_err(|e| match e {
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
    config: WriterConfig,
    stats: Arc<WriterStats>,
    commits: Arc<watch::Sender<u64>>,
) {
    let (max_batch, pipeline) = (config.max_batch.max(1), config.pipeline.max(1));
    let mut in_flight = JoinSet::new();
    let mut draining = false;
    loop {
        // A full pipeline takes nothing new until a batch is done: jobs wait in the queue and
        // make the next batch bigger.
        if in_flight.len() >= pipeline {
            in_flight.join_next().await;
            commits.send_modify(|n| *n += 1);
            continue;
        }
        let first = tokio::select! {
            job = jobs.recv() => job,
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {
                commits.send_modify(|n| *n += 1);
                continue;
            }
            _ = closed.changed(), if !draining => {
                // Refuse new work but drain what is queued: recv() then ends with None.
                jobs.close();
                draining = true;
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut batch = Vec::with_capacity(max_batch);
        batch.push(first);
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (store, stats) = (store.clone(), stats.clone());
        in_flight.spawn(async move { commit(&store, batch, &stats).await });
    }
    while in_flight.join_next().await.is_some() {
        commits.send_modify(|n| *n += 1);
    }
    tracing::info!("event writer drained and stopped");
}

async fn commit(store: &Store, batch: Vec<Job>, stats: &WriterStats) {
    let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|job| (job.request, job.reply)).unzip();
    let events: u64 = requests.iter().map(|r| r.events.len() as u64).sum();
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.requests.fetch_add(requests.len() as u64, Ordering::Relaxed);
    stats.batch_events.observe(events as f64);
    let started = std::time::Instant::now();
    let (appended, sync) = licensd_store::commit_timing_scope(store.append_encoded(requests)).await;
    stats.commit_seconds.observe(started.elapsed().as_secs_f64());
    if let Some(sync) = sync {
        stats.sync_seconds.observe(sync.as_secs_f64());
    }
    match appended {
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
