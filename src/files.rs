//! Settings of protected files: the upload limit and which blob store holds the bytes.

use clap::Args;
use licensd_blobs::{BlobStore, LocalBlobStore, S3BlobStore, S3Config};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    /// Largest protected file an upload may store, in bytes (default 2 GiB); larger: 413.
    #[arg(help_heading = "Protected files", long, env = "LICENSD_FILE_MAX_BYTES", default_value_t = licensd_api::files::DEFAULT_FILE_MAX_BYTES)]
    pub file_max_bytes: u64,
    /// Where the bytes of protected files live: `local` (a content-addressed folder under the
    /// data folder, `<data>/files`) or `s3` (an S3-compatible bucket, for several nodes).
    #[arg(help_heading = "Protected files", long, env = "LICENSD_BLOB_STORE", default_value = "local")]
    pub blob_store: String,
    /// The bucket of the `s3` store.
    #[arg(help_heading = "Protected files", long, env = "LICENSD_BLOB_S3_BUCKET")]
    pub blob_s3_bucket: Option<String>,
    /// Endpoint of an S3-compatible service (`https://…`); unset: AWS S3 in the region.
    #[arg(help_heading = "Protected files", long, env = "LICENSD_BLOB_S3_ENDPOINT")]
    pub blob_s3_endpoint: Option<String>,
    /// Region of the `s3` store's bucket.
    #[arg(help_heading = "Protected files", long, env = "LICENSD_BLOB_S3_REGION", default_value = "us-east-1")]
    pub blob_s3_region: String,
    /// Credentials; unset: the instance's (environment, profile or metadata service).
    #[arg(help_heading = "Protected files", long, env = "LICENSD_BLOB_S3_ACCESS_KEY_ID")]
    pub blob_s3_access_key_id: Option<String>,
    /// Secret of the access key above (never logged).
    #[arg(help_heading = "Protected files", long, env = "LICENSD_BLOB_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub blob_s3_secret_access_key: Option<String>,
    /// Accept an `http://` endpoint (a local S3-compatible server; never across a network).
    #[arg(help_heading = "Protected files", long, env = "LICENSD_BLOB_S3_ALLOW_HTTP", default_value_t = false)]
    pub blob_s3_allow_http: bool,
    /// Seconds an upload's registration holds removals of its app's bytes back (on every node)
    /// without a renewal; renewed every third of it while the upload runs.
    #[arg(help_heading = "Protected files", long, env = "LICENSD_FILE_UPLOAD_LEASE_SECS", default_value_t = licensd_api::files::DEFAULT_UPLOAD_LEASE.as_secs())]
    pub file_upload_lease_secs: u64,
    /// Seconds between sweeps of bytes whose removal is pending (also run at start-up).
    #[arg(help_heading = "Protected files", long, env = "LICENSD_FILE_GC_SWEEP_SECS", default_value_t = licensd_api::files::DEFAULT_GC_SWEEP_EVERY.as_secs())]
    pub file_gc_sweep_secs: u64,
    /// Seconds between listings of the store for bytes no version names (an upload's bytes its
    /// process never recorded); those older than the upload lease are removed (also at start-up).
    #[arg(help_heading = "Protected files", long, env = "LICENSD_FILE_ORPHAN_SWEEP_SECS", default_value_t = licensd_api::files::DEFAULT_ORPHAN_SWEEP_EVERY.as_secs())]
    pub file_orphan_sweep_secs: u64,
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
            "s3" => {
                let bucket = self.blob_s3_bucket.clone().filter(|b| !b.trim().is_empty());
                let Some(bucket) = bucket else { anyhow::bail!("LICENSD_BLOB_STORE=s3 needs LICENSD_BLOB_S3_BUCKET") };
                let config = S3Config {
                    bucket,
                    endpoint: self.blob_s3_endpoint.clone(),
                    region: self.blob_s3_region.clone(),
                    access_key_id: self.blob_s3_access_key_id.clone(),
                    secret_access_key: self.blob_s3_secret_access_key.clone(),
                    allow_http: self.blob_s3_allow_http,
                };
                let store = S3BlobStore::open(&config).map_err(|e| anyhow::anyhow!("cannot use the S3 store: {e}"))?;
                Ok(Arc::new(store))
            }
            other => anyhow::bail!("LICENSD_BLOB_STORE must be `local` or `s3`, not `{other}`"),
        }
    }

    pub fn config(&self, blobs: Arc<dyn BlobStore>) -> licensd_api::files::FilesConfig {
        licensd_api::files::FilesConfig {
            max_bytes: self.file_max_bytes.max(1),
            blobs: Some(blobs),
            upload_lease: std::time::Duration::from_secs(self.file_upload_lease_secs.max(1)),
            gc_sweep_every: std::time::Duration::from_secs(self.file_gc_sweep_secs.max(1)),
            orphan_sweep_every: std::time::Duration::from_secs(self.file_orphan_sweep_secs.max(1)),
        }
    }
}
