//! Protected file delivery over live sessions (websocket.md §8, §14 decisions 1, 2, 8): packet 7
//! streams a file as binary chunk frames (stream mode, the default) or answers a single-use
//! download URL (URL mode, the app's `fileDownloadUrl` setting); packet 8 stops a stream;
//! packet 9 reads a file's metadata. The catalog (versions, policy, blobs, counters) belongs to
//! the files module; `catalog` is the one place this side reads it through.
//!
//! `frame` builds the chunk frames (the framing decision, isolated); `transfer` runs one stream
//! with its bounded window; `slots` caps concurrent transfers per app; `quota` is the daily byte
//! quota per identity; `tokens` the download URLs; `download` serves them over HTTP. The quota
//! and the tokens are persisted (they live in `crate::files::FilesRuntime`, beside the store).

/// Allowance a transfer leases from the daily quota at once by default: 8 MiB.
pub const DEFAULT_QUOTA_LEASE_BYTES: u64 = 8 * 1024 * 1024;

pub mod catalog;
pub mod download;
pub mod frame;
pub mod quota;
pub mod slots;
pub mod tokens;
pub mod transfer;

use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;

/// Limits of file delivery (`LICENSD_FILE_*`, README "Configuration").
#[derive(Debug, Clone)]
pub struct FileDeliveryConfig {
    /// Bytes of file data per chunk frame (decision 2: 64 KiB).
    pub chunk_bytes: usize,
    /// Chunk frames a stream may have queued and unwritten at once: the most the server buffers
    /// per transfer, whatever the client reads.
    pub window_chunks: usize,
    /// Streams and URL downloads running at once per session, and per app.
    pub max_per_session: usize,
    pub max_per_app: usize,
    /// Bytes one identity (license, app user, else client id) may receive per UTC day; 0 is
    /// no quota.
    pub daily_bytes_per_identity: u64,
    /// Allowance one transfer leases from the persisted quota at once (one SQL write per lease,
    /// never per chunk; a crash loses at most this much of a day's quota per running transfer).
    pub quota_lease_bytes: u64,
    /// How long a download URL stays valid (decision 1: 60 s).
    pub url_ttl: Duration,
    /// Base of the download URLs; default `http(s)://<Host of the upgrade>`.
    pub public_base_url: Option<String>,
}

impl Default for FileDeliveryConfig {
    fn default() -> Self {
        Self {
            chunk_bytes: frame::CHUNK_BYTES,
            window_chunks: 4,
            max_per_session: 2,
            max_per_app: 64,
            daily_bytes_per_identity: 20 * 1024 * 1024 * 1024,
            quota_lease_bytes: DEFAULT_QUOTA_LEASE_BYTES,
            url_ttl: Duration::from_secs(60),
            public_base_url: None,
        }
    }
}

/// The delivery runtime: one per server, beside the session registry.
pub struct Delivery {
    pub config: FileDeliveryConfig,
    pub slots: slots::AppSlots,
}

impl Delivery {
    pub fn new(config: FileDeliveryConfig) -> Self {
        Self { slots: slots::AppSlots::new(config.max_per_app), config }
    }
}

/// Why a running stream ends before its last chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Packet 8: terminal FileTransferStopped (304).
    Requested,
    /// The session is over (closed, or its resume window passed): nothing more is sent.
    SessionEnded,
}

/// One running stream of a session, by file name (packet 8 names it).
#[derive(Debug)]
pub struct Active {
    /// Tells the transfer to stop; the transfer removes its own entry when it ends.
    pub stop: watch::Sender<Option<Stop>>,
    /// Which stream this entry is (a newer stream of the same name must not be removed by an
    /// older one ending).
    pub serial: u64,
}

/// What a session holds about files.
#[derive(Debug, Default)]
pub struct SessionFiles {
    /// Streams running now, by file name.
    pub active: HashMap<String, Active>,
    /// URL downloads of this session running now.
    pub downloads: usize,
    /// The version this session last streamed (or got a URL for) per file name: a resume
    /// (`resume_at` > 0) against another version is refused (303), so two versions are never
    /// spliced.
    pub streamed: HashMap<String, u32>,
    /// `http(s)://host` the session's upgrade came to (the default base of download URLs).
    pub base_url: Option<String>,
    next_serial: u64,
}

impl SessionFiles {
    /// Transfers of the session running now (streams and URL downloads).
    pub fn running(&self) -> usize {
        self.active.len() + self.downloads
    }

    pub fn next_serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }
}

/// Stops every stream of a session that is over.
pub fn stop_all(session: &super::session::LiveSession) {
    let files = session.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for active in files.active.values() {
        let _ = active.stop.send(Some(Stop::SessionEnded));
    }
}

/// Decision 8 (the catalog's rule: 4–16 characters of `[A-Za-z0-9 ._-]`, a dot allowed so
/// `client.dll` works); anything else is 301.
pub fn valid_name(name: &str) -> bool {
    licensd_domain::file::check_file_name(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_follow_decision_8() {
        for good in ["client.dll", "abcd", "a b-c_d.e", "0123456789abcdef"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["abc", "0123456789abcdefg", "a/b/c", "nul\0name", "ünïcode", "a\nbcd", ""] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
