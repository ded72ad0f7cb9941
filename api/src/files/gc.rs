//! When the bytes of a deleted file may leave the blob store, decided alike by every node that
//! shares the database. Blobs are content-addressed per app, so two files (or an upload in
//! flight, on any node) may share one: bytes go only when no live version of the app names them
//! and no upload of the app is between storing its bytes and being visible to the node deciding.
//!
//! The state is in the database (migration `blob_gc`, both backends):
//! - an upload registers a row before it stores a byte, renews it while it runs, and marks it
//!   done with the log position of its version once its own model shows it; a node whose model
//!   is behind that position counts the upload as still in flight (it could not see the version
//!   that names the bytes);
//! - a deletion records its keys as pending removals (with the deletion's position), so they
//!   survive the process ending;
//! - removing takes a claim on the app (a lease row) that succeeds only while no upload of the
//!   app is in flight for this node; registering an upload waits while another node's claim is
//!   live. Both statements first lock the app's row (an upsert), so on Postgres one waits for
//!   the other's commit and then reads it (each statement of a read-committed transaction reads
//!   what was committed before it), and on SQLite the single writer orders them anyway.
//!
//! The claim is taken after a deletion, by the last upload of an app to finish, and by the sweep
//! every `LICENSD_FILE_GC_SWEEP_SECS` (and at start-up), which removes every pending key whose
//! deletion the model shows and that no live version names. So a removal is only ever delayed,
//! never lost, and never takes bytes a version (recorded or about to be) names.
//!
//! Bytes an upload stored but never recorded (the process died between storing them and
//! committing the version, or the commit failed) are named by nothing, not even a pending
//! removal: the orphan sweep (every `LICENSD_FILE_ORPHAN_SWEEP_SECS`, and at start-up) lists the
//! store and removes every blob older than the upload lease that no live version names, under
//! the same per-app claim, so an upload in flight on any node (registered, or recorded at a
//! position this node's model has not reached) holds it back exactly as it holds a deletion's.
//! The age is a second guard: an upload whose registration lapsed while it still ran (its node
//! cut off from the database) may not record a version, but may still be writing its bytes.
//!
//! Expiries use the node's clock: the nodes' clocks must agree to well within the upload lease
//! (`LICENSD_FILE_UPLOAD_LEASE_SECS`, 120 s), as NTP keeps them.

use licensd_blobs::{BlobError, BlobStore};
use licensd_domain::AppId;
use licensd_projections::HotModel;
use licensd_store::{Position, SqlValue, Statement, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a finished upload waits for its own model to show its version, and how long a done
/// row then holds other nodes back (a model further behind is stuck, which `/healthz` reports).
const SHOWN_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a removal may hold its claim: removing is a few deletes; a node that dies while
/// holding it blocks the app's uploads until then.
const CLAIM: Duration = Duration::from_secs(60);

/// How often an upload waiting for another node's removal looks again.
const CLAIM_POLL: Duration = Duration::from_millis(50);

/// Locks the app's row (creating it): the first statement of registering and of claiming.
const LOCK_APP: &str = "INSERT INTO blob_gc_apps (app_id, removing_node, removing_until) VALUES ($1, '', 0)
     ON CONFLICT (app_id) DO UPDATE SET app_id = excluded.app_id";

/// Registers an upload unless a removal of the app holds a live claim.
const REGISTER: &str = "INSERT INTO blob_uploads_in_flight
     (upload_id, app_id, node, done, position_tx, position_seq, expires_at)
     SELECT $1, $2, $3, 0, 0, 0, $4
     WHERE NOT EXISTS (SELECT 1 FROM blob_gc_apps WHERE app_id = $2 AND removing_until >= $5)";

/// Claims the app for a removal: no live claim, and no live upload this node's model (at
/// `$5`, `$6`) could not see.
const CLAIM_APP: &str = "UPDATE blob_gc_apps SET removing_node = $2, removing_until = $3
     WHERE app_id = $1 AND removing_until < $4
       AND NOT EXISTS (SELECT 1 FROM blob_uploads_in_flight u
                       WHERE u.app_id = $1 AND u.expires_at >= $4
                         AND (u.done = 0 OR u.position_tx > $5 OR (u.position_tx = $5 AND u.position_seq > $6)))";

const RELEASE: &str = "UPDATE blob_gc_apps SET removing_until = 0 WHERE app_id = $1 AND removing_node = $2";
const RENEW: &str = "UPDATE blob_uploads_in_flight SET expires_at = $2 WHERE upload_id = $1 AND done = 0";
const DONE: &str =
    "UPDATE blob_uploads_in_flight SET done = 1, position_tx = $2, position_seq = $3, expires_at = $4 WHERE upload_id = $1";
const ABANDON: &str = "DELETE FROM blob_uploads_in_flight WHERE upload_id = $1";
const FORGET_EXPIRED: &str = "DELETE FROM blob_uploads_in_flight WHERE expires_at < $1";
const PENDING: &str = "INSERT INTO blob_pending_removals (app_id, storage_key, position_tx, position_seq)
     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
const PENDING_OF_APP: &str = "SELECT storage_key, CAST(position_tx AS TEXT), CAST(position_seq AS TEXT)
     FROM blob_pending_removals WHERE app_id = $1";
const PENDING_APPS: &str = "SELECT DISTINCT app_id FROM blob_pending_removals";
const PENDING_DONE: &str =
    "DELETE FROM blob_pending_removals WHERE app_id = $1 AND storage_key = $2 AND position_tx = $3 AND position_seq = $4";
const IN_FLIGHT_OF_APP: &str =
    "SELECT CAST(COUNT(*) AS TEXT) FROM blob_uploads_in_flight WHERE app_id = $1 AND done = 0 AND expires_at >= $2";

/// Why a sweep of unrecorded bytes stopped.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot list the file store: {0}")]
    Blobs(#[from] BlobError),
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A removal's hold on an app.
#[derive(Debug)]
struct Claim {
    id: String,
    /// When it lapses (Unix ms).
    until: i64,
    /// The model's position when it was taken.
    seen: Position,
}

#[derive(Debug)]
pub struct BlobGc {
    store: Store,
    hot: Arc<HotModel>,
    /// This process, in the rows it writes (for operators reading them).
    node: String,
    /// How long a registration lives without a renewal.
    lease: Duration,
}

impl BlobGc {
    pub fn new(store: Store, hot: Arc<HotModel>, lease: Duration) -> Arc<Self> {
        let lease = lease.max(Duration::from_secs(1));
        Arc::new(Self { store, hot, node: uuid::Uuid::new_v4().to_string(), lease })
    }

    /// Registers an upload of the app before its bytes are stored (waiting while another node
    /// removes bytes of the app); the guard holds removals back, on every node, until its
    /// version is shown by the model, or it is dropped without one.
    pub async fn upload_started(
        self: &Arc<Self>,
        app_id: AppId,
        blobs: Arc<dyn BlobStore>,
    ) -> Result<UploadInFlight, StoreError> {
        let upload_id = uuid::Uuid::new_v4().to_string();
        loop {
            let now = now_ms();
            let expires = now.saturating_add(ms(self.lease));
            let statements = [
                Statement::new(LOCK_APP, [app_id.to_string().into()]),
                Statement::new(
                    REGISTER,
                    [
                        upload_id.clone().into(),
                        app_id.to_string().into(),
                        self.node.clone().into(),
                        expires.into(),
                        now.into(),
                    ],
                ),
            ];
            // The lock upsert touches one row; the registration one more when it was allowed.
            if self.store.execute(&statements).await? >= 2 {
                let valid_until = Arc::new(AtomicI64::new(expires));
                let renewer = tokio::spawn(renew(Arc::clone(self), upload_id.clone(), Arc::clone(&valid_until)));
                return Ok(UploadInFlight {
                    gc: Some(Arc::clone(self)),
                    upload_id,
                    app_id,
                    blobs,
                    position: None,
                    valid_until,
                    renewer,
                });
            }
            tokio::time::sleep(CLAIM_POLL).await;
        }
    }

    /// Records, durably, that the file deleted at `position` named `keys`: from now on every
    /// node's collector removes those no live version names, once its model shows `position`.
    pub async fn pending(
        &self,
        app_id: AppId,
        keys: impl IntoIterator<Item = String>,
        position: Position,
    ) -> Result<(), StoreError> {
        let keys: BTreeSet<String> = keys.into_iter().collect();
        let statements: Vec<Statement> = keys
            .into_iter()
            .map(|key| {
                Statement::new(
                    PENDING,
                    [app_id.to_string().into(), key.into(), position.tx.into(), position.seq.into()],
                )
            })
            .collect();
        self.store.execute(&statements).await.map(drop)
    }

    /// [`Self::collect`] once the model shows `position` (a deletion answered before it did).
    pub async fn collect_after(&self, position: Position, app_id: AppId, blobs: Arc<dyn BlobStore>) {
        if self.hot.wait_for(position, SHOWN_TIMEOUT).await.is_err() {
            tracing::warn!("a file deletion was not shown by the model in time; the sweep removes its bytes later");
            return;
        }
        if let Err(error) = self.collect(app_id, blobs.as_ref()).await {
            tracing::warn!(%error, "bytes pending removal not collected; the sweep tries again");
        }
    }

    /// Removes the app's pending keys that the model shows deleted and no live version names,
    /// when the app can be claimed (no upload in flight for this node, no other removal).
    /// Returns how many blobs were removed, `None` when the app could not be claimed.
    pub async fn collect(&self, app_id: AppId, blobs: &dyn BlobStore) -> Result<Option<u64>, StoreError> {
        let Some(claim) = self.claim(app_id).await? else { return Ok(None) };
        let removed = self.remove_pending(app_id, blobs, claim.seen, claim.until).await;
        let released = self.release(app_id, claim).await;
        let removed = removed?;
        released?;
        Ok(Some(removed))
    }

    /// Claims the app for removing bytes: `None` while an upload of the app is in flight that
    /// this node's model does not show yet, or another removal holds it.
    async fn claim(&self, app_id: AppId) -> Result<Option<Claim>, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let claimed_at = now_ms();
        let until = claimed_at.saturating_add(ms(CLAIM));
        // Read before claiming: every upload this position covers is visible to the checks below.
        let seen = self.hot.position();
        let statements = [
            Statement::new(LOCK_APP, [app_id.to_string().into()]),
            Statement::new(
                CLAIM_APP,
                [
                    app_id.to_string().into(),
                    id.clone().into(),
                    until.into(),
                    claimed_at.into(),
                    seen.tx.into(),
                    seen.seq.into(),
                ],
            ),
        ];
        // The lock upsert touches one row; the claim one more when it was allowed.
        let claimed = self.store.execute(&statements).await? >= 2;
        Ok(claimed.then_some(Claim { id, until, seen }))
    }

    async fn release(&self, app_id: AppId, claim: Claim) -> Result<(), StoreError> {
        self.store.execute(&[Statement::new(RELEASE, [app_id.to_string().into(), claim.id.into()])]).await.map(drop)
    }

    /// With the claim held: removes what is pending and no live version names.
    async fn remove_pending(
        &self,
        app_id: AppId,
        blobs: &dyn BlobStore,
        seen: Position,
        until: i64,
    ) -> Result<u64, StoreError> {
        let rows = self.store.query_rows(PENDING_OF_APP, &[app_id.to_string().into()]).await?;
        let mut removed = 0;
        for row in rows {
            let mut cells = row.into_iter().map(Option::unwrap_or_default);
            let (Some(key), Some(tx), Some(seq)) = (cells.next(), cells.next(), cells.next()) else { continue };
            let (Ok(tx), Ok(seq)) = (tx.parse::<i64>(), seq.parse::<i64>()) else { continue };
            // A deletion the model does not show yet: its key still looks in use. Later.
            if (Position { tx, seq }) > seen {
                continue;
            }
            if !claim_holds(until) {
                break;
            }
            if !self.hot.blob_in_use(app_id, &key) {
                match blobs.delete(&key).await {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot remove a deleted file's bytes; the sweep tries again");
                        continue;
                    }
                }
            }
            let done = Statement::new(PENDING_DONE, [app_id.to_string().into(), key.into(), tx.into(), seq.into()]);
            self.store.execute(&[done]).await?;
        }
        Ok(removed)
    }

    /// Removes the blobs no version names, that are older than the upload lease (see the module's
    /// comment); returns how many. Run at start-up and every `LICENSD_FILE_ORPHAN_SWEEP_SECS`.
    pub async fn sweep_orphans(&self, blobs: &dyn BlobStore) -> Result<u64, SweepError> {
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::MAX);
        self.remove_orphans(blobs, chrono::Utc::now() - lease).await
    }

    /// [`Self::sweep_orphans`] with blobs written before `cutoff` counted old enough.
    async fn remove_orphans(
        &self,
        blobs: &dyn BlobStore,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, SweepError> {
        let mut unnamed: BTreeMap<AppId, Vec<String>> = BTreeMap::new();
        for blob in blobs.list().await? {
            let Some(Ok(app_id)) = blob.key.split_once('/').map(|(namespace, _)| namespace.parse().map(AppId)) else {
                continue;
            };
            // Checked here only to leave apps without orphans unclaimed; again under the claim.
            if blob.modified < cutoff && !self.hot.blob_in_use(app_id, &blob.key) {
                unnamed.entry(app_id).or_default().push(blob.key);
            }
        }
        let mut removed = 0;
        for (app_id, keys) in unnamed {
            // Claimed by an upload in flight or another removal: the next sweep looks again.
            let Some(claim) = self.claim(app_id).await? else { continue };
            for key in keys {
                if !claim_holds(claim.until) {
                    break;
                }
                // The model (at least at the claim's position) names every version recorded so far.
                if self.hot.blob_in_use(app_id, &key) {
                    continue;
                }
                match blobs.delete(&key).await {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(error = %e, "cannot remove unrecorded bytes; the sweep tries again"),
                }
            }
            self.release(app_id, claim).await?;
        }
        Ok(removed)
    }

    /// Every app with pending removals, collected; returns how many blobs were removed. Run at
    /// start-up and every `LICENSD_FILE_GC_SWEEP_SECS`: what a process that ended (or a
    /// deletion that found an upload in flight) left pending is removed here.
    pub async fn sweep(&self, blobs: &dyn BlobStore) -> Result<u64, StoreError> {
        self.store.execute(&[Statement::new(FORGET_EXPIRED, [now_ms().into()])]).await?;
        let apps = self.store.query_text(PENDING_APPS, &[]).await?;
        let mut removed = 0;
        for app in apps.into_iter().flatten() {
            let Ok(app_id) = app.parse().map(AppId) else { continue };
            removed += self.collect(app_id, blobs).await?.unwrap_or(0);
        }
        Ok(removed)
    }

    /// Sweeps pending removals now and then every `every`, and unrecorded bytes now and then
    /// every `orphans_every`, for as long as the process runs.
    pub fn start_sweeps(self: &Arc<Self>, blobs: Arc<dyn BlobStore>, every: Duration, orphans_every: Duration) {
        let (gc, pending_blobs) = (Arc::clone(self), Arc::clone(&blobs));
        repeat(every, "pending removals", move || {
            let (gc, blobs) = (Arc::clone(&gc), Arc::clone(&pending_blobs));
            async move { gc.sweep(blobs.as_ref()).await }
        });
        let gc = Arc::clone(self);
        repeat(orphans_every, "unrecorded bytes", move || {
            let (gc, blobs) = (Arc::clone(&gc), Arc::clone(&blobs));
            async move { gc.sweep_orphans(blobs.as_ref()).await }
        });
    }

    /// Uploads of the app registered and not done, on any node (tests, operators).
    pub async fn uploads_in_flight(&self, app_id: AppId) -> Result<usize, StoreError> {
        let count = self.store.query_text(IN_FLIGHT_OF_APP, &[app_id.to_string().into(), now_ms().into()]).await?;
        Ok(count.into_iter().flatten().next().and_then(|c| c.parse().ok()).unwrap_or(0))
    }

    /// The upload's version is visible here: mark it done (other nodes wait until their models
    /// reach `position`), or drop it when nothing was recorded; then collect what waited for it.
    async fn upload_done(&self, upload_id: String, app_id: AppId, position: Option<Position>, blobs: &dyn BlobStore) {
        let statement = match position {
            Some(p) => {
                let expires = now_ms().saturating_add(ms(SHOWN_TIMEOUT));
                Statement::new(DONE, [upload_id.into(), p.tx.into(), p.seq.into(), expires.into()])
            }
            None => Statement::new(ABANDON, [SqlValue::from(upload_id)]),
        };
        if let Err(error) = self.store.execute(&[statement]).await {
            // The row expires by itself within the lease; until then it holds removals back.
            tracing::warn!(%error, "an upload's end could not be recorded for the file store's collector");
            return;
        }
        if let Err(error) = self.collect(app_id, blobs).await {
            tracing::warn!(%error, "bytes pending removal not collected; the sweep tries again");
        }
    }
}

/// Runs `sweep` now and then every `every` (at least a second) for as long as the process runs,
/// logging what it removed and, when it fails, that it runs again at the next tick.
fn repeat<F, Fut, E>(every: Duration, what: &'static str, sweep: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<u64, E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
        loop {
            ticks.tick().await;
            match sweep().await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, sweep = what, "file bytes removed from the store"),
                Err(error) => {
                    tracing::warn!(%error, sweep = what, "a sweep of the file store failed; it runs again later")
                }
            }
        }
    });
}

/// Whether a claim lapsing at `until` still leaves room for one more removal: stop well before
/// it lapses, since past it an upload may have registered.
fn claim_holds(until: i64) -> bool {
    now_ms() < until - ms(CLAIM) / 4
}

/// Keeps an upload's registration alive (every third of the lease) while it runs; records until
/// when it is known to be valid.
async fn renew(gc: Arc<BlobGc>, upload_id: String, valid_until: Arc<AtomicI64>) {
    let every = gc.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let expires = now_ms().saturating_add(ms(gc.lease));
        let renewed = gc.store.execute(&[Statement::new(RENEW, [upload_id.clone().into(), expires.into()])]).await;
        match renewed {
            Ok(_) => valid_until.store(expires, Ordering::Release),
            Err(error) => tracing::warn!(%error, "an upload's registration could not be renewed"),
        }
    }
}

/// One upload between registering and its version being shown (or its failure). Dropping it
/// (the request ended, whichever way) releases it in the background: after the model shows the
/// recorded version, or at once when nothing was recorded.
pub struct UploadInFlight {
    gc: Option<Arc<BlobGc>>,
    upload_id: String,
    app_id: AppId,
    blobs: Arc<dyn BlobStore>,
    position: Option<Position>,
    valid_until: Arc<AtomicI64>,
    renewer: tokio::task::JoinHandle<()>,
}

impl UploadInFlight {
    /// Whether the registration is still known to hold removals back (its renewals reached the
    /// database): an upload whose registration lapsed must not record a version, since another
    /// node may have removed its bytes meanwhile.
    pub fn still_registered(&self) -> bool {
        now_ms() < self.valid_until.load(Ordering::Acquire)
    }

    /// The upload's version was committed at `position`.
    pub fn recorded(&mut self, position: Option<Position>) {
        self.position = position;
    }
}

impl Drop for UploadInFlight {
    fn drop(&mut self) {
        self.renewer.abort();
        let Some(gc) = self.gc.take() else { return };
        let (upload_id, app_id, blobs, position) =
            (std::mem::take(&mut self.upload_id), self.app_id, Arc::clone(&self.blobs), self.position);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            if let Some(position) = position {
                if gc.hot.wait_for(position, SHOWN_TIMEOUT).await.is_err() {
                    tracing::warn!("an uploaded version was not shown by the model in time; deletions go on");
                }
            }
            gc.upload_done(upload_id, app_id, position, blobs.as_ref()).await;
        });
    }
}

/// moto's S3 server for the orphan sweep's test on the S3 store (the blob store's own helper).
#[cfg(test)]
#[path = "../../../blobs/tests/moto/mod.rs"]
mod moto;

#[cfg(test)]
mod tests {
    use super::*;
    use licensd_blobs::LocalBlobStore;
    use licensd_store::testing::on_both_backends;
    use std::sync::Mutex;

    /// A blob store in a fresh temporary folder (removed when dropped).
    struct Folder(std::path::PathBuf, Arc<dyn BlobStore>);

    impl Folder {
        fn new() -> Self {
            let path = std::env::temp_dir().join(format!("licensd-gc-{}", uuid::Uuid::new_v4()));
            let store: Arc<dyn BlobStore> = Arc::new(LocalBlobStore::open(&path).unwrap());
            Self(path, store)
        }

        async fn stored(&self, app_id: AppId, bytes: &'static [u8]) -> String {
            let body = futures::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from_static(bytes))]).boxed();
            self.1.put(&app_id.to_string(), body, 1 << 20).await.unwrap().key
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    use futures::StreamExt;

    /// Two nodes: each its own collector and model, one database.
    fn nodes(store: &Store) -> [Arc<BlobGc>; 2] {
        let node = || BlobGc::new(store.clone(), Arc::new(HotModel::default()), Duration::from_secs(60));
        [node(), node()]
    }

    /// An upload registered on one node holds removals back on the other; a removal's claim
    /// holds registrations back; once both are over the pending bytes go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_on_one_node_holds_removals_on_another_back() {
        on_both_backends(|store| async move {
            let folder = Folder::new();
            let [one, two] = nodes(&store);
            let app_id = AppId(uuid::Uuid::new_v4());
            let key = folder.stored(app_id, b"deleted file's bytes").await;
            let upload = one.upload_started(app_id, folder.1.clone()).await.unwrap();
            assert_eq!(two.uploads_in_flight(app_id).await.unwrap(), 1);
            two.pending(app_id, [key.clone()], Position::START).await.unwrap();
            assert_eq!(two.collect(app_id, folder.1.as_ref()).await.unwrap(), None, "an upload is in flight");
            assert!(folder.1.len(&key).await.is_ok());
            drop(upload);
            // Released in the background; then the pending bytes go (no version names them).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while folder.1.len(&key).await.is_ok() {
                assert!(std::time::Instant::now() < deadline, "pending bytes never removed");
                two.sweep(folder.1.as_ref()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(two.uploads_in_flight(app_id).await.unwrap(), 0);

            let claim = two.claim(app_id).await.unwrap().expect("nothing holds the app");
            let waiting =
                tokio::time::timeout(Duration::from_millis(300), one.upload_started(app_id, folder.1.clone()));
            assert!(waiting.await.is_err(), "an upload registered while another node removes bytes");
            two.release(app_id, claim).await.unwrap();
            let upload = tokio::time::timeout(Duration::from_secs(5), one.upload_started(app_id, folder.1.clone()));
            drop(upload.await.expect("registered once the claim is released").unwrap());
        })
        .await;
    }

    /// The orphan sweep removes what no version names and is older than the cutoff; a younger
    /// blob is kept (an upload on another node may be writing it), and so is every blob of an
    /// app with an upload in flight, on any node.
    async fn orphans_go_once_old_and_unclaimed(blobs: Arc<dyn BlobStore>, store: Store) {
        let put = |app_id: AppId, bytes: &'static [u8]| {
            let blobs = Arc::clone(&blobs);
            async move {
                let body = futures::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from_static(bytes))]);
                blobs.put(&app_id.to_string(), body.boxed(), 1 << 20).await.unwrap().key
            }
        };
        let [one, two] = nodes(&store);
        let (app, busy) = (AppId(uuid::Uuid::new_v4()), AppId(uuid::Uuid::new_v4()));
        let old = put(app, b"stored, never recorded").await;
        let held = put(busy, b"an app with an upload in flight").await;
        // The listing's times may be whole seconds (S3): the cutoff falls between old and fresh.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let cutoff = chrono::Utc::now() - chrono::Duration::milliseconds(1000);
        let fresh = put(app, b"stored just now").await;
        let upload = one.upload_started(busy, Arc::clone(&blobs)).await.unwrap();

        // (The S3 bucket is shared by both backends' runs: the counts include the earlier run's.)
        assert!(two.remove_orphans(blobs.as_ref(), cutoff).await.unwrap() >= 1);
        assert!(matches!(blobs.len(&old).await, Err(licensd_blobs::BlobError::NotFound)), "the old orphan stays");
        assert!(blobs.len(&fresh).await.is_ok(), "an orphan younger than the lease was removed");
        assert!(blobs.len(&held).await.is_ok(), "removed while an upload of the app was in flight");

        let id = upload.upload_id.clone();
        std::mem::forget(upload); // ended by hand, as the drop's task would
        one.upload_done(id, busy, None, blobs.as_ref()).await;
        assert!(two.remove_orphans(blobs.as_ref(), cutoff).await.unwrap() >= 1);
        assert!(matches!(blobs.len(&held).await, Err(licensd_blobs::BlobError::NotFound)));
        assert!(blobs.len(&fresh).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orphans_leave_the_local_store_once_old_and_unclaimed() {
        on_both_backends(|store| async move {
            let folder = Folder::new();
            orphans_go_once_old_and_unclaimed(Arc::clone(&folder.1), store).await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orphans_leave_the_s3_store_once_old_and_unclaimed() {
        let Some(moto) = tokio::task::spawn_blocking(moto::start).await.unwrap() else { return };
        let blobs: Arc<dyn BlobStore> = Arc::new(licensd_blobs::S3BlobStore::open(&moto.config()).unwrap());
        on_both_backends(|store| orphans_go_once_old_and_unclaimed(Arc::clone(&blobs), store)).await;
    }

    /// An upload recorded at a position a node's model has not reached holds that node's
    /// removals back: it cannot see the version naming the bytes yet.
    #[tokio::test]
    async fn a_recorded_upload_holds_back_nodes_whose_model_is_behind() {
        on_both_backends(|store| async move {
            let folder = Folder::new();
            let [one, two] = nodes(&store);
            let app_id = AppId(uuid::Uuid::new_v4());
            let ahead = Position { tx: 0, seq: 7 };
            let registered = one.upload_started(app_id, folder.1.clone()).await.unwrap();
            let id = registered.upload_id.clone();
            std::mem::forget(registered); // ended by hand below, as the drop's task would
            one.upload_done(id, app_id, Some(ahead), folder.1.as_ref()).await;
            assert!(two.claim(app_id).await.unwrap().is_none(), "the model at 0:0 cannot see 0:7");
        })
        .await;
    }

    /// Many registrations on one node race many removal claims on another: the database never
    /// lets both hold the app at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registrations_and_claims_exclude_each_other() {
        on_both_backends(|store| async move {
            let folder = Folder::new();
            let [one, two] = nodes(&store);
            let app_id = AppId(uuid::Uuid::new_v4());
            // (uploads held, claims held, claims won, uploads won)
            let held = Arc::new(Mutex::new((0u32, 0u32, 0u32, 0u32)));
            let mut tasks = Vec::new();
            for i in 0..8 {
                let (one, two, held, blobs) = (one.clone(), two.clone(), held.clone(), folder.1.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..6 {
                        if i % 2 == 0 {
                            let upload = one.upload_started(app_id, blobs.clone()).await.unwrap();
                            {
                                let mut h = held.lock().unwrap();
                                assert_eq!(h.1, 0, "an upload registered while a removal held the app");
                                h.0 += 1;
                                h.3 += 1;
                            }
                            tokio::time::sleep(Duration::from_millis(3)).await;
                            held.lock().unwrap().0 -= 1;
                            // The row goes in the background: wait so the next round starts clean.
                            let id = upload.upload_id.clone();
                            drop(upload);
                            one.upload_done(id, app_id, None, blobs.as_ref()).await;
                        } else {
                            let deadline = std::time::Instant::now() + Duration::from_secs(30);
                            let claim = loop {
                                if let Some(claim) = two.claim(app_id).await.unwrap() {
                                    break claim;
                                }
                                assert!(std::time::Instant::now() < deadline, "no claim won in 30 s");
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            };
                            {
                                let mut h = held.lock().unwrap();
                                assert_eq!(h.0, 0, "a removal claimed the app while an upload held it");
                                h.1 += 1;
                                h.2 += 1;
                            }
                            tokio::time::sleep(Duration::from_millis(3)).await;
                            held.lock().unwrap().1 -= 1;
                            two.release(app_id, claim).await.unwrap();
                        }
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            let h = *held.lock().unwrap();
            assert_eq!(h, (0, 0, 24, 24), "every upload registered and every removal claimed once");
        })
        .await;
    }
}
