//! What every part of the API that touches protected files shares: the blob store the bytes
//! live in, the per-file delivery counters, the upload limit (`LICENSD_FILE_MAX_BYTES`), when
//! bytes may leave the store ([`gc`]), and the persisted state of delivery (the daily quota and
//! the download tokens, in the database so a restart or another node sees them).
//! The Developer API's routes are in `v1/files.rs`; delivery to live sessions uses the same
//! [`FilesRuntime`] through `AppState::files`.

pub mod gc;

use crate::live::files::{quota::DailyQuota, tokens::Tokens, FileDeliveryConfig};
use crate::ApiError;
use licensd_blobs::BlobStore;
use licensd_projections::{FileCounters, HotModel};
use std::sync::Arc;
use std::time::Duration;

/// Largest upload by default: 2 GiB.
pub const DEFAULT_FILE_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// Largest file an upload may store (`LICENSD_FILE_MAX_BYTES`); a larger body gets 413.
    pub max_bytes: u64,
    /// Where the bytes go (`LICENSD_BLOB_STORE`); `None` (a bare test router) refuses uploads
    /// and deliveries with 503.
    pub blobs: Option<Arc<dyn BlobStore>>,
    /// How long an upload's registration holds removals back without a renewal
    /// (`LICENSD_FILE_UPLOAD_LEASE_SECS`; renewed every third of it while the upload runs).
    pub upload_lease: Duration,
    /// How often pending removals are swept (`LICENSD_FILE_GC_SWEEP_SECS`; also at start-up).
    pub gc_sweep_every: Duration,
    /// How often the store is listed for bytes no version names (`LICENSD_FILE_ORPHAN_SWEEP_SECS`;
    /// also at start-up).
    pub orphan_sweep_every: Duration,
}

/// `LICENSD_FILE_UPLOAD_LEASE_SECS` by default.
pub const DEFAULT_UPLOAD_LEASE: Duration = Duration::from_secs(120);
/// `LICENSD_FILE_GC_SWEEP_SECS` by default.
pub const DEFAULT_GC_SWEEP_EVERY: Duration = Duration::from_secs(600);
/// `LICENSD_FILE_ORPHAN_SWEEP_SECS` by default (a listing of the whole store: hourly).
pub const DEFAULT_ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(3600);

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_FILE_MAX_BYTES,
            blobs: None,
            upload_lease: DEFAULT_UPLOAD_LEASE,
            gc_sweep_every: DEFAULT_GC_SWEEP_EVERY,
            orphan_sweep_every: DEFAULT_ORPHAN_SWEEP_EVERY,
        }
    }
}

#[derive(Debug)]
pub struct FilesRuntime {
    pub config: FilesConfig,
    /// Transfer counters per file (`transfer_count`, `last_transferred_at`, bytes served).
    pub counters: FileCounters,
    /// Uploads in flight and removals of deleted files' bytes (shared through the database).
    pub gc: Arc<gc::BlobGc>,
    /// The daily byte quota per identity (persisted).
    pub quota: Arc<DailyQuota>,
    /// Outstanding download URLs (persisted).
    pub tokens: Tokens,
}

impl FilesRuntime {
    pub fn new(
        store: licensd_store::Store,
        hot: Arc<HotModel>,
        config: FilesConfig,
        delivery: &FileDeliveryConfig,
    ) -> Self {
        Self {
            gc: gc::BlobGc::new(store.clone(), hot, config.upload_lease),
            config,
            counters: FileCounters::new(store.clone()),
            quota: Arc::new(DailyQuota::new(
                store.clone(),
                delivery.daily_bytes_per_identity,
                delivery.quota_lease_bytes,
            )),
            tokens: Tokens::new(store),
        }
    }

    /// Sweeps pending removals and unrecorded bytes now (start-up: what an ended process left)
    /// and then every `LICENSD_FILE_GC_SWEEP_SECS` and `LICENSD_FILE_ORPHAN_SWEEP_SECS`. Call
    /// once the model has loaded.
    pub fn start_sweeps(&self) {
        if let Some(blobs) = &self.config.blobs {
            self.gc.start_sweeps(Arc::clone(blobs), self.config.gc_sweep_every, self.config.orphan_sweep_every);
        }
    }

    /// The blob store, or 503 when none is configured.
    pub fn blobs(&self) -> Result<&Arc<dyn BlobStore>, ApiError> {
        self.config.blobs.as_ref().ok_or_else(|| ApiError::Unavailable("no blob store is configured".into()))
    }
}
