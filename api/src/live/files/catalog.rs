//! The one place delivery reads the file catalog (versions and policy from the hot model, bytes
//! from the blob store, counters from their read model), so the rest of delivery depends on
//! this narrow seam only.

use crate::AppState;
use licensd_domain::AppId;
use tokio::io::AsyncRead;

/// Who may fetch a file: the catalog's one rule.
pub type Policy = licensd_domain::file::FilePolicy;

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
pub fn current(state: &AppState, app_id: AppId, name: &str) -> Option<Served> {
    let file = state.hot.file(app_id, name)?;
    let current = &file.current;
    Some(Served {
        app_id,
        name: file.name.clone(),
        version: current.version,
        size: current.size,
        sha256: current.sha256.clone(),
        storage_key: current.storage_key.clone(),
        policy: file.policy.clone(),
    })
}

/// The version's file on this machine when the blob store is a local folder (a download then
/// reads it with positioned reads straight into the buffers it sends).
pub fn local_path(state: &AppState, file: &Served) -> Option<std::path::PathBuf> {
    state.files.config.blobs.as_ref()?.local_path(&file.storage_key)
}

/// Where a transfer's bytes come from. Hyper and the WebSocket library write through their own
/// buffers, so the kernel's `sendfile` cannot be used; the local store's file is instead read
/// with positioned reads on the blocking pool straight into the buffer that is sent (one copy
/// from the page cache, none through an intermediate buffer: a `tokio::fs::File` reads into its
/// own buffer and copies out of it). Another store streams through its reader.
pub enum Source {
    #[cfg(unix)]
    Local {
        file: std::sync::Arc<std::fs::File>,
        offset: u64,
    },
    Store(Reader),
}

impl Source {
    /// The version's bytes from `offset` on.
    pub async fn open(state: &AppState, file: &Served, offset: u64) -> std::io::Result<Self> {
        #[cfg(unix)]
        if let Some(path) = local_path(state, file) {
            let opened = tokio::fs::File::open(path).await?.into_std().await;
            return Ok(Self::Local { file: std::sync::Arc::new(opened), offset });
        }
        Ok(Self::Store(open(state, file, offset).await?))
    }

    /// Fills `buffer[from..]` with the next bytes (an error if the blob ends first) and gives
    /// the buffer back. See [`Self::read_many`].
    pub async fn read_into(&mut self, buffer: Vec<u8>, from: usize) -> std::io::Result<Vec<u8>> {
        let mut read = self.read_many(vec![buffer], from).await?;
        read.pop().ok_or_else(|| std::io::Error::other("no buffer read"))
    }

    /// Fills `[from..]` of each buffer in turn with the next bytes (one blocking-pool round trip
    /// for them all on the local store). The buffers are allocated by the caller, on a runtime
    /// worker, not on the blocking thread: the allocator keeps a heap per thread, and 50
    /// downloads at once run their reads on up to 50 blocking threads, each of which then kept
    /// its own heap's pages (the profile in BENCHMARKS.md, "Protected file delivery").
    pub async fn read_many(&mut self, mut buffers: Vec<Vec<u8>>, from: usize) -> std::io::Result<Vec<Vec<u8>>> {
        use tokio::io::AsyncReadExt;
        let wanted: usize = buffers.iter().map(|b| b.len().saturating_sub(from)).sum();
        match self {
            #[cfg(unix)]
            Self::Local { file, offset } => {
                let (file, mut at) = (std::sync::Arc::clone(file), *offset);
                buffers = tokio::task::spawn_blocking(move || {
                    for buffer in &mut buffers {
                        let bytes = &mut buffer[from..];
                        std::os::unix::fs::FileExt::read_exact_at(&*file, bytes, at)?;
                        at += bytes.len() as u64;
                    }
                    Ok::<_, std::io::Error>(buffers)
                })
                .await
                .map_err(std::io::Error::other)??;
                *offset += wanted as u64;
            }
            Self::Store(reader) => {
                for buffer in &mut buffers {
                    reader.read_exact(&mut buffer[from..]).await?;
                }
            }
        }
        Ok(buffers)
    }
}

/// The version's bytes from `offset` on.
pub async fn open(state: &AppState, file: &Served, offset: u64) -> std::io::Result<Reader> {
    let blobs = state.files.blobs().map_err(|_| std::io::Error::other("no blob store is configured"))?;
    blobs.open(&file.storage_key, offset).await.map_err(|e| std::io::Error::other(e.to_string()))
}

pub async fn counters(state: &AppState, file: &Served) -> Result<Counters, ()> {
    let counts = state.files.counters.of_file(file.app_id, &file.name).await.map_err(|_| ())?;
    Ok(Counters {
        transfer_count: u32::try_from(counts.transfer_count).unwrap_or(u32::MAX),
        last_transferred_at: counts.last_transferred_at.map_or(0, |at| at.timestamp()),
    })
}

/// Records a finished transfer: `bytes` delivered, `completed` when it reached the end.
pub async fn record(state: &AppState, file: &Served, bytes: u64, completed: bool) {
    let now = state.commands.now();
    let counters = &state.files.counters;
    if let Err(error) = counters.record_transfer(file.app_id, &file.name, file.version, bytes, completed, now).await {
        tracing::warn!(file = %file.name, %error, "file transfer counters not recorded");
    }
}
