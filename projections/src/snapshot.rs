//! Snapshots of the in-memory model, so a start-up replays only the log written since.
//!
//! A file is one JSON header line, then the body:
//! `{"format":"licensd-hot-model","code":…,"position":…,"bodyBytes":…,"sha256":…,"parts":[…]}\n<body>`;
//! the body is JSON parts: everything but the licenses, then the licenses in chunks (parsed on
//! every core at start-up).
//! `code` fingerprints the domain's and this crate's sources (see `build.rs`): a snapshot
//! written by other code is ignored, as is one whose body fails its length or SHA-256, and the
//! model is then replayed from the start. Domain values are written with serde, so a field
//! added to a license, app or account is carried without listing it here.
//!
//! Consistency: the hot path records its own appends in the model before the tail reads them
//! back, so a license may show events after the model's position, with their bills already
//! counted in the balance and burn. The capture takes the apply lock and the hot path's
//! recording lock alone, so every license and every balance are taken at one instant; a tail
//! replayed on top skips what each license already shows, as it does live.
//!
//! Files are written next to their final path, fsynced, then renamed over it (and the folder
//! fsynced): a crash leaves the old snapshot or the new one, never a mix.

use crate::hot::{AccountView, ApiKeyView, DashboardLogin, HotModel, LastApplied, LicenseEntry};
use crate::nonces::NonceGenerations;
use dashmap::DashMap;
use licensd_domain::app::App;
use licensd_domain::app_user::{AppUser, AppUserId};
use licensd_domain::commerce::Connection;
use licensd_domain::file::File;
use licensd_domain::{AccountId, AppId, LicenseKey};
use licensd_store::Position;
use licensd_store::{EventStore, Store};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const FORMAT: &str = "licensd-hot-model";

/// The fingerprint of the code that reads and writes snapshots.
pub const SNAPSHOT_CODE: &str = env!("LICENSD_SNAPSHOT_CODE");

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    format: String,
    code: String,
    position: Position,
    body_bytes: u64,
    sha256: String,
    licenses: usize,
    /// The event at `position` (none for an empty model).
    last: Option<LastApplied>,
    /// Byte lengths of the body's parts: everything but the licenses, then the licenses in
    /// chunks (each a JSON array), so loading parses the chunks on every core.
    parts: Vec<u64>,
}

/// Licenses per chunk of the body (some 4 MB): a start-up holds a few chunks in memory at once.
#[cfg(not(test))]
const CHUNK: usize = 10_000;
#[cfg(test)]
const CHUNK: usize = 2;

/// Why a snapshot file was not used (the model is then replayed from the start).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotRejected {
    #[error("cannot read it: {0}")]
    Unreadable(#[from] std::io::Error),
    #[error("it is not a licensd snapshot (no valid header)")]
    NoHeader,
    #[error("it was written by other code (fingerprint {found}, this build {expected})")]
    OtherCode { found: String, expected: &'static str },
    #[error("its body is damaged (length or SHA-256 does not match its header)")]
    Damaged,
    #[error("its body cannot be read: {0}")]
    Malformed(String),
    #[error("the model was not empty")]
    ModelNotEmpty,
    #[error("it does not belong to this event log (another database, or one restored from an older backup)")]
    OtherLog,
    #[error("the event log cannot be read to check it: {0}")]
    LogUnreadable(String),
}

/// A map's entries as a sequence of `(key, value)` pairs, serialized straight from the map.
struct Pairs<'a, K, V>(&'a DashMap<K, V>);

impl<K, V> Serialize for Pairs<'_, K, V>
where
    K: Serialize + Eq + std::hash::Hash,
    V: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for entry in self.0.iter() {
            seq.serialize_element(&(entry.key(), entry.value()))?;
        }
        seq.end()
    }
}

/// [`Pairs`] of a map of shared values, each written as the value itself (the same bytes as
/// an unshared map's).
struct SharedPairs<'a, K, V>(&'a DashMap<K, Arc<V>>);

impl<K, V> Serialize for SharedPairs<'_, K, V>
where
    K: Serialize + Eq + std::hash::Hash,
    V: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for entry in self.0.iter() {
            seq.serialize_element(&(entry.key(), &**entry.value()))?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct BodyOut<'a> {
    apps: SharedPairs<'a, AppId, App>,
    accounts: Pairs<'a, AccountId, AccountView>,
    api_keys: Pairs<'a, String, ApiKeyView>,
    burn: Pairs<'a, AppId, VecDeque<(i64, u64)>>,
    connections: Pairs<'a, uuid::Uuid, (AccountId, Connection)>,
    logins: Pairs<'a, String, DashboardLogin>,
    nonces: NonceGenerations,
    app_users: Pairs<'a, AppUserId, AppUser>,
    user_logins: Pairs<'a, String, AppUserId>,
    user_licenses: Pairs<'a, AppUserId, Vec<LicenseKey>>,
    files: SharedPairs<'a, (AppId, String), File>,
}

#[derive(Deserialize)]
struct BodyIn {
    apps: Vec<(AppId, App)>,
    accounts: Vec<(AccountId, AccountView)>,
    api_keys: Vec<(String, ApiKeyView)>,
    burn: Vec<(AppId, VecDeque<(i64, u64)>)>,
    connections: Vec<(uuid::Uuid, (AccountId, Connection))>,
    logins: Vec<(String, DashboardLogin)>,
    nonces: NonceGenerations,
    app_users: Vec<(AppUserId, AppUser)>,
    user_logins: Vec<(String, AppUserId)>,
    user_licenses: Vec<(AppUserId, Vec<LicenseKey>)>,
    /// Absent from snapshots written before files existed.
    #[serde(default)]
    files: Vec<((AppId, String), File)>,
}

/// What a written snapshot reflects.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub position: Position,
    pub licenses: usize,
    pub bytes: u64,
}

impl HotModel {
    /// The whole model as snapshot bytes, taken at one instant (see the module's notes).
    pub fn snapshot_bytes(&self) -> Result<(Vec<u8>, Written), serde_json::Error> {
        let (mut bytes, body, written) = self.snapshot_parts()?;
        bytes.extend_from_slice(&body);
        Ok((bytes, written))
    }

    /// The header line and the body, apart: writing them one after the other needs no third
    /// copy of the body.
    fn snapshot_parts(&self) -> Result<(Vec<u8>, Vec<u8>, Written), serde_json::Error> {
        let _applying = self.applying.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _recording = self.capturing.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let position = self.position();
        let last = self.last_applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut body = serde_json::to_vec(&BodyOut {
            apps: SharedPairs(&self.apps),
            accounts: Pairs(&self.accounts),
            api_keys: Pairs(&self.api_keys),
            burn: Pairs(&self.burn),
            connections: Pairs(&self.connections),
            logins: Pairs(&self.logins),
            nonces: self.nonces.to_generations(),
            app_users: Pairs(&self.users.by_id),
            user_logins: Pairs(&self.users.by_login),
            user_licenses: Pairs(&self.users.licenses),
            files: SharedPairs(&self.files.by_name),
        })?;
        let mut parts = vec![body.len() as u64];
        let licenses = self.write_license_chunks(&mut body, &mut parts)?;
        drop((_recording, _applying));
        let header = Header {
            format: FORMAT.into(),
            code: SNAPSHOT_CODE.into(),
            position,
            body_bytes: body.len() as u64,
            sha256: hex::encode(Sha256::digest(&body)),
            licenses,
            last,
            parts,
        };
        let mut line = serde_json::to_vec(&header)?;
        line.push(b'\n');
        let bytes = (line.len() + body.len()) as u64;
        Ok((line, body, Written { position, licenses, bytes }))
    }

    /// Appends the licenses to `body` as JSON arrays of `[license, version]`, `CHUNK` to an
    /// array, recording each array's length in `parts`; returns how many were written.
    fn write_license_chunks(&self, body: &mut Vec<u8>, parts: &mut Vec<u64>) -> Result<usize, serde_json::Error> {
        let mut written = 0;
        let mut start = body.len();
        for entry in self.licenses.iter() {
            body.push(if written % CHUNK == 0 { b'[' } else { b',' });
            serde_json::to_writer(&mut *body, &**entry.value())?;
            written += 1;
            if written % CHUNK == 0 {
                body.push(b']');
                parts.push((body.len() - start) as u64);
                start = body.len();
            }
        }
        if written % CHUNK != 0 {
            body.push(b']');
            parts.push((body.len() - start) as u64);
        }
        Ok(written)
    }

    /// Reads the license chunks from `body` (hashing every byte) and parses them on every core,
    /// straight into the map. Only a few chunks are in memory at once, whatever the snapshot's
    /// size: reading the whole file first cost its full size again in resident memory, which
    /// the allocator kept after start-up (see BENCHMARKS.md). A chunk that does not parse is
    /// reported after the rest was read and hashed, so damage is told apart from bad content.
    fn restore_licenses<R: Read>(&self, body: &mut Hashed<R>, lengths: &[u64]) -> Result<(), SnapshotRejected> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, lengths.len().max(1));
        // Chunks read and waiting for a parser; buffers come back for reuse.
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(threads);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let full_rx = std::sync::Mutex::new(full_rx);
        let malformed = std::sync::Mutex::new(None::<String>);
        let read = std::thread::scope(|scope| {
            for _ in 0..threads {
                let (full_rx, empty_tx, malformed) = (&full_rx, empty_tx.clone(), &malformed);
                scope.spawn(move || loop {
                    let next = full_rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                    let Ok(chunk) = next else { return };
                    match serde_json::from_slice::<Vec<LicenseEntry>>(&chunk) {
                        Ok(entries) => {
                            for entry in entries {
                                self.licenses.insert(entry.0.key.clone(), entry);
                            }
                        }
                        Err(e) => {
                            malformed
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .get_or_insert(e.to_string());
                        }
                    }
                    let _ = empty_tx.send(chunk);
                });
            }
            drop(empty_tx);
            let read = lengths.iter().try_for_each(|length| {
                let mut chunk = empty_rx.try_recv().unwrap_or_default();
                body.read_part(*length, &mut chunk)?;
                // The parsers only stop once this sender is dropped.
                full_tx.send(chunk).map_err(|_| SnapshotRejected::Damaged)
            });
            drop(full_tx);
            read
        });
        read?;
        match malformed.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Some(why) => Err(SnapshotRejected::Malformed(why)),
            None => Ok(()),
        }
    }

    /// Fills an empty model from snapshot bytes; on `Err` the model may be partly filled and
    /// must be dropped.
    pub fn restore_snapshot(&mut self, bytes: &[u8]) -> Result<(Position, Option<LastApplied>), SnapshotRejected> {
        self.restore_snapshot_from(bytes)
    }

    /// Fills an empty model from a snapshot read from `reader` as it goes (a few chunks in
    /// memory at once); on `Err` the model may be partly filled and must be dropped.
    pub fn restore_snapshot_from<R: Read>(
        &mut self,
        reader: R,
    ) -> Result<(Position, Option<LastApplied>), SnapshotRejected> {
        if self.license_count() > 0 || self.position() != Position::START {
            return Err(SnapshotRejected::ModelNotEmpty);
        }
        let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
        let mut line = Vec::new();
        (&mut reader).take(MAX_HEADER_BYTES).read_until(b'\n', &mut line)?;
        if line.pop() != Some(b'\n') {
            return Err(SnapshotRejected::NoHeader);
        }
        let header: Header = serde_json::from_slice(&line).map_err(|_| SnapshotRejected::NoHeader)?;
        if header.format != FORMAT {
            return Err(SnapshotRejected::NoHeader);
        }
        if header.code != SNAPSHOT_CODE {
            return Err(SnapshotRejected::OtherCode { found: header.code, expected: SNAPSHOT_CODE });
        }
        if header.parts.iter().sum::<u64>() != header.body_bytes || header.parts.is_empty() {
            return Err(SnapshotRejected::Malformed("its parts do not add up to its body".into()));
        }
        // The header's count is checked only once the body is read: a damaged one may not make
        // the restore reserve more than the body could hold (a license takes well over this).
        let at_most = usize::try_from(header.body_bytes / MIN_LICENSE_BYTES).unwrap_or(usize::MAX);
        self.reserve_licenses(header.licenses.min(at_most));
        let mut body = Hashed { inner: reader, hasher: Sha256::new() };
        let mut first = Vec::new();
        body.read_part(header.parts[0], &mut first)?;
        let licenses = self.restore_licenses(&mut body, &header.parts[1..]);
        // Damage first: a damaged body may also fail to parse, and damage is the better reason.
        let mut rest = [0u8; 1];
        let trailing = body.inner.read(&mut rest)?;
        if trailing != 0 || hex::encode(body.hasher.finalize()) != header.sha256 {
            return Err(SnapshotRejected::Damaged);
        }
        licenses?;
        if self.licenses.len() != header.licenses {
            return Err(SnapshotRejected::Malformed("it holds fewer licenses than its header says".into()));
        }
        let body: BodyIn = serde_json::from_slice(&first).map_err(|e| SnapshotRejected::Malformed(e.to_string()))?;
        drop(first);
        self.apps.extend(body.apps.into_iter().map(|(id, app)| (id, Arc::new(app))));
        // The key index is derived from the apps, so it is rebuilt rather than stored twice.
        for app in self.apps.iter() {
            if let Some(key) = &app.websocket_key {
                self.websocket_keys.insert(key.digest.clone(), app.app_id);
            }
        }
        self.accounts.extend(body.accounts);
        self.api_keys.extend(body.api_keys);
        self.burn.extend(body.burn);
        self.connections.extend(body.connections);
        self.logins.extend(body.logins);
        self.users.by_id.extend(body.app_users);
        self.users.by_login.extend(body.user_logins);
        self.users.licenses.extend(body.user_licenses);
        self.files.by_name.extend(body.files.into_iter().map(|(key, file)| (key, Arc::new(file))));
        if !self.nonces.extend_from(&body.nonces) {
            return Err(SnapshotRejected::Malformed("nonces are not 16-byte keys in hex".into()));
        }
        self.position.send_replace(header.position);
        *self.last_applied.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = header.last.clone();
        Ok((header.position, header.last))
    }
}

/// Fewer bytes than any license takes in a snapshot's body (its key alone is longer).
const MIN_LICENSE_BYTES: u64 = 32;

/// A header line longer than this is not a snapshot's.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// The body of a snapshot being read, hashed as it goes.
struct Hashed<R> {
    inner: std::io::BufReader<R>,
    hasher: Sha256,
}

impl<R: Read> Hashed<R> {
    /// Reads the next `length` bytes into `buffer` (replacing its content); a file that ends
    /// before is damaged.
    fn read_part(&mut self, length: u64, buffer: &mut Vec<u8>) -> Result<(), SnapshotRejected> {
        buffer.clear();
        let read = (&mut self.inner).take(length).read_to_end(buffer)?;
        if read as u64 != length {
            return Err(SnapshotRejected::Damaged);
        }
        self.hasher.update(&buffer[..]);
        Ok(())
    }
}

/// Writes the model's snapshot to `path` atomically (temporary file, fsync, rename, fsync of
/// the folder).
pub fn write_snapshot(model: &HotModel, path: &Path) -> std::io::Result<Written> {
    let (header, body, written) = model.snapshot_parts().map_err(std::io::Error::other)?;
    let temporary = temporary_path(path);
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&header)?;
        file.write_all(&body)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)?;
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(folder)?.sync_all()?;
        }
        Ok(written)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// A model loaded from the snapshot at `path`, if there is a usable one that belongs to the
/// log in `store`. A missing file is silent; an unusable one is logged and ignored (the caller
/// replays the whole log). Reading and checking the body runs off the async threads.
pub async fn load_snapshot(
    store: &Store,
    path: &Path,
    fresh: impl FnOnce() -> HotModel + Send + 'static,
) -> Option<HotModel> {
    let file = path.to_path_buf();
    let restored = tokio::task::spawn_blocking(move || {
        let reader = match std::fs::File::open(&file) {
            Ok(reader) => reader,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SnapshotRejected::Unreadable(e)),
        };
        let mut model = fresh();
        let (position, last) = model.restore_snapshot_from(reader)?;
        Ok(Some((model, position, last)))
    })
    .await
    .unwrap_or_else(|e| Err(SnapshotRejected::Malformed(e.to_string())));
    let checked = match restored {
        Ok(None) => return None,
        Ok(Some((model, position, last))) => belongs_to(store, position, last.as_ref()).await.map(|()| model),
        Err(rejected) => Err(rejected),
    };
    checked.map_err(|rejected| log_ignored(path, &rejected)).ok()
}

/// Whether the log holds the snapshot's last event at the snapshot's position.
async fn belongs_to(store: &Store, position: Position, last: Option<&LastApplied>) -> Result<(), SnapshotRejected> {
    let Some(last) = last else {
        return if position == Position::START { Ok(()) } else { Err(SnapshotRejected::OtherLog) };
    };
    let found = store
        .read_stream(&last.stream_id, last.version)
        .await
        .map_err(|e| SnapshotRejected::LogUnreadable(e.to_string()))?;
    match found.first() {
        Some(event) if event.event_id == last.event_id && event.position == position => Ok(()),
        _ => Err(SnapshotRejected::OtherLog),
    }
}

fn log_ignored(path: &Path, why: &SnapshotRejected) {
    tracing::warn!(
        path = %path.display(),
        reason = %why,
        "snapshot of the in-memory model ignored; replaying the whole log"
    );
}

/// When snapshots are written while serving (one is always written at shutdown).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotSchedule {
    /// Write when this long has passed since the last one and events were applied meanwhile.
    pub interval: Duration,
    /// Write as soon as this many events were applied since the last one.
    pub every_events: u64,
}

/// Writes snapshots of `model` to `path` on `schedule` until `stop` turns true. Failures are
/// logged and retried at the next occasion (a start-up then replays more of the log, nothing else).
pub async fn run_snapshots(
    model: Arc<HotModel>,
    path: PathBuf,
    schedule: SnapshotSchedule,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = (Instant::now(), model.applied_events());
    let tick = schedule.interval.clamp(Duration::from_millis(100), Duration::from_secs(1));
    while !*stop.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => break,
        }
        let applied = model.applied_events() - last.1;
        let due = applied >= schedule.every_events.max(1) || (applied > 0 && last.0.elapsed() >= schedule.interval);
        if due {
            let counted = model.applied_events();
            if write_logged(model.clone(), path.clone()).await {
                last = (Instant::now(), counted);
            }
        }
    }
}

/// Writes a snapshot off the async threads and logs the outcome; `true` if it was written.
pub async fn write_logged(model: Arc<HotModel>, path: PathBuf) -> bool {
    let started = Instant::now();
    let file = path.clone();
    let written = tokio::task::spawn_blocking(move || write_snapshot(&model, &file))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    match written {
        Ok(written) => {
            tracing::info!(
                path = %path.display(),
                position = %written.position,
                licenses = written.licenses,
                bytes = written.bytes,
                millis = started.elapsed().as_millis() as u64,
                "snapshot of the in-memory model written"
            );
            true
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the snapshot of the in-memory model");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use licensd_domain::license::{License, LicenseExtras, LicenseStatus};
    use licensd_domain::LicenseKey;

    fn license(n: u8) -> License {
        License {
            key: LicenseKey::from_random([n; 16]),
            app_id: AppId::new(),
            account_id: AccountId::new(),
            status: LicenseStatus::Active,
            expires_at: None,
            max_hwid_slots: 2,
            hwids: vec![format!("hw-{n}")],
            label: Some(format!("label {n}")),
            variables: Default::default(),
            created_at: chrono::Utc::now(),
            extras: LicenseExtras {
                levels: vec![format!("level-{n}")],
                max_sessions: Some(u32::from(n)),
                linked_user: (n % 2 == 0).then(licensd_domain::app_user::AppUserId::new),
                ..Default::default()
            }
            .into(),
        }
    }

    #[test]
    fn licenses_in_several_chunks_restore_and_a_short_count_is_refused() {
        for count in [0u8, 1, 2, 5] {
            let model = HotModel::default();
            for n in 0..count {
                let license = license(n);
                model.licenses.insert(license.key.clone(), Box::new((license, u64::from(n) + 1)));
            }
            let (bytes, written) = model.snapshot_bytes().unwrap();
            assert_eq!(written.licenses, usize::from(count));
            let mut restored = HotModel::default();
            restored.restore_snapshot(&bytes).unwrap();
            assert_eq!(restored.digest().unwrap(), model.digest().unwrap(), "{count} licenses");
        }
        // A header claiming more licenses than the chunks hold (with a matching checksum).
        let model = HotModel::default();
        let license = license(9);
        model.licenses.insert(license.key.clone(), Box::new((license, 1)));
        let (bytes, _) = model.snapshot_bytes().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let lying = text.replacen("\"licenses\":1", "\"licenses\":2", 1);
        assert_ne!(lying, text);
        let result = HotModel::default().restore_snapshot(lying.as_bytes());
        assert!(matches!(result, Err(SnapshotRejected::Malformed(_))), "{result:?}");
    }

    /// Read as a stream, a snapshot cut short or with a damaged license chunk is refused as
    /// damaged (not as malformed, though the damaged chunk does not parse either).
    #[test]
    fn a_cut_or_damaged_snapshot_is_refused_as_damaged() {
        let model = HotModel::default();
        for n in 0..5 {
            let license = license(n);
            model.licenses.insert(license.key.clone(), Box::new((license, 1)));
        }
        let (bytes, _) = model.snapshot_bytes().unwrap();
        for cut in [bytes.len() - 1, bytes.len() - 40, bytes.len() / 2] {
            let result = HotModel::default().restore_snapshot_from(&bytes[..cut]);
            assert!(matches!(result, Err(SnapshotRejected::Damaged)), "cut at {cut}: {result:?}");
        }
        let mut damaged = bytes.clone();
        let at = damaged.len() - 30;
        damaged[at] = b'{';
        let result = HotModel::default().restore_snapshot_from(&damaged[..]);
        assert!(matches!(result, Err(SnapshotRejected::Damaged)), "{result:?}");
        let mut longer = bytes.clone();
        longer.push(b' ');
        let result = HotModel::default().restore_snapshot_from(&longer[..]);
        assert!(matches!(result, Err(SnapshotRejected::Damaged)), "{result:?}");
        let mut restored = HotModel::default();
        restored.restore_snapshot_from(&bytes[..]).unwrap();
        assert_eq!(restored.digest().unwrap(), model.digest().unwrap());
    }
}
