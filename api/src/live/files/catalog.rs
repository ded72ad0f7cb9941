//! The one place delivery reads the file catalog (versions and policy from the hot model, bytes
//! from the blob store, counters from their read model), so the rest of delivery depends on
//! this narrow seam only.

use crate::AppState;
use licensd_domain::AppId;
use tokio::io::AsyncRead;

/// Who may fetch a file (the catalog's policy as delivery applies it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    AnyAuthorized,
    Levels(Vec<String>),
    Public,
}

impl Policy {
    pub fn allows(&self, authorized: bool, levels: &[String]) -> bool {
        match self {
            Self::Public => true,
            Self::AnyAuthorized => authorized,
            Self::Levels(wanted) => authorized && wanted.iter().any(|w| levels.contains(w)),
        }
    }
}

/// The version of a file a transfer delivers.
#[derive(Debug, Clone)]
pub struct Served {
    pub app_id: AppId,
    pub name: String,
    pub version: u32,
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    pub storage_key: String,
    pub policy: Policy,
}

impl Served {
    #[cfg(test)]
    pub fn for_tests(name: &str, version: u32, size: u64) -> Self {
        Self {
            app_id: AppId(uuid::Uuid::nil()),
            name: name.into(),
            version,
            size,
            sha256: String::new(),
            storage_key: String::new(),
            policy: Policy::Public,
        }
    }
}

/// A file's delivery counters (packet 9).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub transfer_count: u32,
    /// Unix seconds; 0 when never transferred.
    pub last_transferred_at: i64,
}

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// The version a new transfer of `name` delivers now: the newest.
pub fn current(_state: &AppState, _app_id: AppId, _name: &str) -> Option<Served> {
    None
}

/// The version's bytes from `offset` on.
pub async fn open(_state: &AppState, _file: &Served, _offset: u64) -> std::io::Result<Reader> {
    Err(std::io::Error::other("no blob store"))
}

pub async fn counters(_state: &AppState, _file: &Served) -> Result<Counters, ()> {
    Ok(Counters::default())
}

/// Records a finished transfer: `bytes` delivered, `completed` when it reached the end.
pub async fn record(_state: &AppState, _file: &Served, _bytes: u64, _completed: bool) {}
