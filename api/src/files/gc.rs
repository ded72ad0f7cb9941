//! When the bytes of a deleted file may leave the blob store. Blobs are content-addressed per
//! app, so two files (or an upload in flight) may share one: bytes go only when no live version
//! of the app names them and no upload of the app is between storing its bytes and having its
//! version shown by the in-memory model.
//!
//! Every decision is taken under one lock: an upload registers before it stores anything, and a
//! deletion that finds an upload of the app in flight leaves its keys pending; the last upload
//! to finish (its version shown by the model, or failed) collects them. So an upload's bytes are
//! never removed in the window between their rename into place and their version being recorded,
//! and a deletion is never lost (only delayed, or dropped with the process: unreferenced bytes).

use licensd_blobs::BlobStore;
use licensd_domain::AppId;
use licensd_projections::HotModel;
use licensd_store::Position;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long a finished upload waits for the model to show its version before it stops holding
/// back deletions (the model is normally milliseconds behind; past this it is stuck, which
/// `/healthz` reports).
const SHOWN_TIMEOUT: Duration = Duration::from_secs(300);

/// Uploads in flight and deletions waiting for them, per app.
#[derive(Debug, Default)]
struct AppGc {
    uploads: usize,
    pending: BTreeSet<String>,
}

#[derive(Debug)]
pub struct BlobGc {
    apps: Mutex<HashMap<AppId, AppGc>>,
    hot: Arc<HotModel>,
}

impl BlobGc {
    pub fn new(hot: Arc<HotModel>) -> Arc<Self> {
        Arc::new(Self { apps: Mutex::default(), hot })
    }

    /// Registers an upload of the app before its bytes are stored; the guard holds deletions
    /// back until [`UploadInFlight::recorded`] saw its version in the model, or it is dropped.
    pub async fn upload_started(self: &Arc<Self>, app_id: AppId, blobs: Arc<dyn BlobStore>) -> UploadInFlight {
        self.apps.lock().await.entry(app_id).or_default().uploads += 1;
        UploadInFlight { gc: Some(Arc::clone(self)), app_id, blobs, position: None }
    }

    /// Removes the bytes under `keys` that no live version of the app names, now, or once the
    /// app's uploads in flight are done. Call after the model shows the deletion.
    pub async fn collect(&self, app_id: AppId, keys: impl IntoIterator<Item = String>, blobs: &dyn BlobStore) {
        let mut apps = self.apps.lock().await;
        match apps.get_mut(&app_id) {
            Some(app) if app.uploads > 0 => app.pending.extend(keys),
            _ => self.remove_unreferenced(app_id, keys, blobs).await,
        }
    }

    /// [`Self::collect`] once the model shows `position` (a deletion answered before it did).
    pub async fn collect_after(
        &self,
        position: Option<Position>,
        app_id: AppId,
        keys: Vec<String>,
        blobs: Arc<dyn BlobStore>,
    ) {
        if let Some(position) = position {
            if self.hot.wait_for(position, SHOWN_TIMEOUT).await.is_err() {
                tracing::warn!("a file deletion was not shown by the model in time; its bytes are kept");
                return;
            }
        }
        self.collect(app_id, keys, blobs.as_ref()).await;
    }

    /// Called with the lock held, so no upload can register meanwhile.
    async fn remove_unreferenced(&self, app_id: AppId, keys: impl IntoIterator<Item = String>, blobs: &dyn BlobStore) {
        for key in keys {
            if self.hot.blob_in_use(app_id, &key) {
                continue;
            }
            if let Err(e) = blobs.delete(&key).await {
                tracing::warn!(error = %e, "cannot remove a deleted file's bytes");
            }
        }
    }

    async fn upload_done(&self, app_id: AppId, blobs: &dyn BlobStore) {
        let mut apps = self.apps.lock().await;
        let Some(app) = apps.get_mut(&app_id) else { return };
        app.uploads = app.uploads.saturating_sub(1);
        if app.uploads == 0 {
            let pending = std::mem::take(&mut app.pending);
            apps.remove(&app_id);
            self.remove_unreferenced(app_id, pending, blobs).await;
        }
    }

    /// Uploads in flight for the app (tests).
    pub async fn uploads_in_flight(&self, app_id: AppId) -> usize {
        self.apps.lock().await.get(&app_id).map_or(0, |app| app.uploads)
    }
}

/// One upload between registering and its version being shown (or its failure). Dropping it
/// (the request ended, whichever way) releases it in the background: after the model shows the
/// recorded version, or at once when nothing was recorded.
pub struct UploadInFlight {
    gc: Option<Arc<BlobGc>>,
    app_id: AppId,
    blobs: Arc<dyn BlobStore>,
    position: Option<Position>,
}

impl UploadInFlight {
    /// The upload's version was committed at `position`.
    pub fn recorded(&mut self, position: Option<Position>) {
        self.position = position;
    }
}

impl Drop for UploadInFlight {
    fn drop(&mut self) {
        let Some(gc) = self.gc.take() else { return };
        let (app_id, blobs, position) = (self.app_id, Arc::clone(&self.blobs), self.position);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            if let Some(position) = position {
                if gc.hot.wait_for(position, SHOWN_TIMEOUT).await.is_err() {
                    tracing::warn!("an uploaded version was not shown by the model in time; deletions go on");
                }
            }
            gc.upload_done(app_id, blobs.as_ref()).await;
        });
    }
}
