//! Where the bytes of protected files live, behind one trait ([`BlobStore`]): a content-addressed
//! directory under the data folder ([`LocalBlobStore`], the default) or an S3-compatible bucket
//! ([`S3BlobStore`]).
//!
//! A blob's key is `<namespace>/<sha256 hex>`; the namespace is the app's id, so blobs are
//! shared only between files of one app (no tenant can learn from timing that another tenant
//! holds the same bytes) and the log names them without holding them. An upload is streamed:
//! its size and SHA-256 are computed as the bytes pass, and it becomes visible only complete
//! (a temporary file, fsynced, then renamed into place).

mod local;
mod s3;

pub use local::LocalBlobStore;
pub use s3::{S3BlobStore, S3Config};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::path::PathBuf;
use tokio::io::AsyncRead;

/// An upload's bytes as they arrive (a request body); an `Err` item aborts the upload.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// A stored blob read from some offset to its end.
pub type BlobReader = Box<dyn AsyncRead + Send + Unpin>;

/// What a finished upload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// `<namespace>/<sha256 hex>`.
    pub key: String,
    pub size: u64,
    /// SHA-256 of the whole content, lowercase hex.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The upload passed the size limit; nothing was stored.
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("no blob is stored under that key")]
    NotFound,
    #[error("invalid blob key or namespace")]
    InvalidKey,
    #[error("offset {offset} is past the end of the blob ({size} bytes)")]
    BadOffset { offset: u64, size: u64 },
    /// The body ended with an error (the client went away); nothing was stored.
    #[error("the upload's body failed: {0}")]
    Body(String),
    #[error("blob storage failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the object store failed: {0}")]
    Backend(String),
}

/// One blob found by [`BlobStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBlob {
    /// `<namespace>/<sha256 hex>`.
    pub key: String,
    /// When its bytes were last written (a re-upload of the same bytes writes them again).
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// A store of immutable, content-addressed blobs.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Streams `body` into the store under `namespace` (an app id), computing its size and
    /// SHA-256 as it goes. Refuses with [`BlobError::TooLarge`] as soon as more than
    /// `max_bytes` arrived. Nothing is visible under the key until the whole body is stored;
    /// storing bytes already present under the key leaves one copy.
    fn put<'a>(
        &'a self,
        namespace: &'a str,
        body: ByteStream,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<StoredBlob, BlobError>>;

    /// The blob's bytes from `offset` to the end (`offset == len` gives an empty reader).
    fn open<'a>(&'a self, key: &'a str, offset: u64) -> BoxFuture<'a, Result<BlobReader, BlobError>>;

    /// The blob's size in bytes.
    fn len<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, BlobError>>;

    /// Removes the blob; removing one that is not there succeeds.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BlobError>>;

    /// Every blob stored (complete ones only, not an upload's temporary bytes), in no order.
    /// Anything under the store's folder or prefix that is not a valid key is left out.
    fn list(&self) -> BoxFuture<'_, Result<Vec<ListedBlob>, BlobError>>;

    /// Removes what uploads interrupted by a crash left behind; returns how many. Run at
    /// start-up, before uploads are accepted.
    fn sweep_temporaries(&self) -> BoxFuture<'_, Result<u64, BlobError>>;

    /// The blob's file on this machine, when the store is a local directory: a download can
    /// then be sent with the kernel's copy (`sendfile`) instead of through user space.
    fn local_path(&self, key: &str) -> Option<PathBuf>;

    /// `local` or `s3`, for logs and the health page.
    fn kind(&self) -> &'static str;
}

/// Checks a namespace: 1–64 characters of lowercase hex digits and '-' (an app id).
pub fn check_namespace(namespace: &str) -> Result<(), BlobError> {
    let valid = !namespace.is_empty()
        && namespace.len() <= 64
        && namespace.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(BlobError::InvalidKey)
    }
}

/// Splits a key into its namespace and digest, refusing anything else (no path can escape the
/// store's folder through a key).
pub fn split_key(key: &str) -> Result<(&str, &str), BlobError> {
    let (namespace, digest) = key.split_once('/').ok_or(BlobError::InvalidKey)?;
    check_namespace(namespace)?;
    let hex64 = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex64 {
        return Err(BlobError::InvalidKey);
    }
    Ok((namespace, digest))
}

/// Counts and hashes an upload's bytes as they pass, enforcing the size limit.
#[derive(Debug)]
pub(crate) struct Tally {
    hasher: sha2::Sha256,
    size: u64,
    limit: u64,
}

impl Tally {
    pub(crate) fn new(limit: u64) -> Self {
        Self { hasher: sha2::Digest::new(), size: 0, limit }
    }

    pub(crate) fn add(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(BlobError::TooLarge { limit: self.limit });
        }
        sha2::Digest::update(&mut self.hasher, chunk);
        Ok(())
    }

    pub(crate) fn finish(self, namespace: &str) -> StoredBlob {
        let sha256 = hex::encode(sha2::Digest::finalize(self.hasher));
        StoredBlob { key: format!("{namespace}/{sha256}"), size: self.size, sha256 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        let digest = "a".repeat(64);
        assert!(split_key(&format!("0b1c-22/{digest}")).is_ok());
        for bad in [
            format!("../{digest}"),
            format!("ns/../{digest}"),
            format!("NS/{digest}"),
            "ns/abc".to_string(),
            digest.clone(),
            format!("/{digest}"),
            format!("ab/{}", "g".repeat(64)),
        ] {
            assert!(matches!(split_key(&bad), Err(BlobError::InvalidKey)), "{bad}");
        }
    }
}
