//! The SQLite log's durability, taken out of SQLite's write lock.
//!
//! With `synchronous=FULL` a commit fsyncs the WAL file inside `COMMIT`, while it still holds the
//! write lock, so the next batch's inserts wait for the disk. The log's writer connection runs at
//! `synchronous=NORMAL` instead (its `COMMIT` only writes the WAL frames) and every write on it
//! waits here, after its `COMMIT` and before anyone is answered, for an `fdatasync` of the WAL
//! file that began after that `COMMIT` had returned. One sync covers every commit before it
//! (the WAL is one file, written in commit order), so a sync in progress while more batches
//! commit is followed by one sync for all of them: the disk's cost is shared, as group commit
//! shares it between requests.
//!
//! Durability is the same as `FULL`'s: SQLite's recovery keeps a commit only when all its frames
//! are in the WAL with valid checksums, and no write on the log's connection is acknowledged
//! before its frames are synced. What changes is when a commit becomes *visible*: other
//! connections can read it for the time of one sync before it is durable. The log's tail
//! readers (the read models and the in-memory model, whose snapshots are files of their own)
//! must not build durable state on such an event, so [`WalSync::visible_below`] tells `read_all`
//! where the log's unsynced commits start (see its use in `sqlite.rs`). Reads on a request's
//! path (a stream, a read-model row) may see a commit that is still syncing; what they answer is
//! not itself a write, and any write they lead to lands later in the same WAL, synced no earlier.

use crate::StoreError;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug)]
pub(crate) struct WalSync {
    /// The log's `-wal` file, opened for each sync: SQLite deletes and re-creates it when the
    /// last connection closes, and a kept descriptor would sync the deleted file.
    wal: PathBuf,
    /// Writes committed on the log's connection so far (their `COMMIT` returned).
    committed: AtomicU64,
    /// Of those, how many a finished sync covers.
    synced: AtomicU64,
    /// One sync at a time: a writer that waited its turn usually finds itself covered.
    turn: tokio::sync::Mutex<()>,
    /// Set when a sync failed. The kernel may have dropped the pages it could not write, so a
    /// later sync could succeed without them: every later write is refused (as Postgres stops
    /// on a failed WAL fsync) until the server restarts and SQLite reads the WAL back.
    failed: AtomicBool,
    /// First positions of appended batches whose commit may not be synced yet, registered
    /// before their `COMMIT` and removed once their sync is done.
    unsynced: Mutex<BTreeSet<i64>>,
    /// Tests hold syncs back with this (see `SqliteStore::hold_wal_syncs`).
    #[cfg(feature = "testing")]
    pub(crate) hold: std::sync::Arc<tokio::sync::RwLock<()>>,
}

/// A commit that may still need syncing: [`WalSync::durable`] waits for it.
#[must_use]
pub(crate) struct Ticket(u64);

impl WalSync {
    pub(crate) fn new(log_file: &std::path::Path) -> Self {
        let mut wal = log_file.as_os_str().to_owned();
        wal.push("-wal");
        Self {
            wal: wal.into(),
            committed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
            failed: AtomicBool::new(false),
            unsynced: Mutex::new(BTreeSet::new()),
            #[cfg(feature = "testing")]
            hold: Default::default(),
        }
    }

    /// Marks a batch starting at `first` as not yet durable; call before its `COMMIT`.
    pub(crate) fn registering(&self, first: i64) {
        self.unsynced.lock().unwrap_or_else(|e| e.into_inner()).insert(first);
    }

    /// Forgets a batch registered with [`Self::registering`]: synced, or never committed.
    pub(crate) fn forget(&self, first: i64) {
        self.unsynced.lock().unwrap_or_else(|e| e.into_inner()).remove(&first);
    }

    /// Positions at or past this may belong to a commit not yet synced (`i64::MAX`: none).
    /// Read it *after* the query it bounds: every commit that query could see had registered
    /// before it committed, and is either synced (durable) or still listed by then.
    pub(crate) fn visible_below(&self) -> i64 {
        self.unsynced.lock().unwrap_or_else(|e| e.into_inner()).first().copied().unwrap_or(i64::MAX)
    }

    /// Call right after a write's `COMMIT` returned.
    pub(crate) fn committed(&self) -> Ticket {
        Ticket(self.committed.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Returns once the commit of `ticket` is on disk; an error means its fate is unknown.
    pub(crate) async fn durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        loop {
            if self.synced.load(Ordering::SeqCst) >= ticket.0 {
                return Ok(());
            }
            let _turn = self.turn.lock().await;
            if self.synced.load(Ordering::SeqCst) >= ticket.0 {
                return Ok(());
            }
            // Counts `ticket` (taken before), so the loop ends after it.
            self.sync().await?;
        }
    }

    /// One `fdatasync` of the WAL file, covering every commit counted before it began.
    async fn sync(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(self.failure());
        }
        #[cfg(feature = "testing")]
        let _held = self.hold.read().await;
        let through = self.committed.load(Ordering::SeqCst);
        let wal = self.wal.clone();
        let synced = tokio::task::spawn_blocking(move || std::fs::File::open(&wal)?.sync_data()).await;
        match synced {
            Ok(Ok(())) => {
                self.synced.fetch_max(through, Ordering::SeqCst);
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, wal = %self.wal.display(), "syncing the log's WAL failed; refusing writes");
                self.failed.store(true, Ordering::SeqCst);
                Err(self.failure())
            }
            Err(e) => {
                self.failed.store(true, Ordering::SeqCst);
                Err(StoreError::CommitUnknown(format!("the WAL sync did not finish: {e}")))
            }
        }
    }

    /// Syncs whatever the WAL holds now: at start-up, where a process that died before its
    /// sync may have left commits only in the page cache, which this process can read.
    pub(crate) async fn sync_now(&self) -> Result<(), StoreError> {
        if !self.wal.exists() {
            return Ok(()); // no WAL: everything is in the database file, synced by SQLite
        }
        let ticket = self.committed();
        self.durable(ticket).await
    }

    fn failure(&self) -> StoreError {
        StoreError::CommitUnknown(format!(
            "an fdatasync of {} failed; writes are refused until a restart",
            self.wal.display()
        ))
    }
}
