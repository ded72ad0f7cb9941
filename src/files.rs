//! Settings of protected files: the upload limit and which blob store holds the bytes.

use clap::Args;
use licensd_blobs::{BlobStore, LocalBlobStore};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    /// Largest protected file an upload may store, in bytes (default 2 GiB); larger: 413.
    #[arg(long, env = "LICENSD_FILE_MAX_BYTES", default_value_t = licensd_api::files::DEFAULT_FILE_MAX_BYTES)]
    pub file_max_bytes: u64,
    /// Where the bytes of protected files live: `local` (a content-addressed folder under the
    /// data folder, `<data>/files`).
    #[arg(long, env = "LICENSD_BLOB_STORE", default_value = "local")]
    pub blob_store: String,
}

impl FileArgs {
    /// Opens the configured blob store (its settings checked; nothing is swept yet).
    pub fn open(&self, data_dir: &Path) -> anyhow::Result<Arc<dyn BlobStore>> {
        match self.blob_store.as_str() {
            "local" => {
                let root = data_dir.join("files");
                let store = LocalBlobStore::open(&root)
                    .map_err(|e| anyhow::anyhow!("cannot open the file store {}: {e}", root.display()))?;
                Ok(Arc::new(store))
            }
            other => anyhow::bail!("LICENSD_BLOB_STORE must be `local`, not `{other}`"),
        }
    }

    pub fn config(&self, blobs: Arc<dyn BlobStore>) -> licensd_api::files::FilesConfig {
        licensd_api::files::FilesConfig { max_bytes: self.file_max_bytes.max(1), blobs: Some(blobs) }
    }
}
