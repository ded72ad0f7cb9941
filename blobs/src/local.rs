//! The default blob store: a content-addressed directory (`<root>/blobs/<namespace>/<sha256>`).
//!
//! An upload is written to `<root>/tmp/<random>.part`, fsynced, then renamed to its final name
//! and the folder fsynced, so a crash leaves either the whole blob or a temporary file that
//! [`BlobStore::sweep_temporaries`] removes at the next start-up; a reader never sees a partial
//! blob. A dropped upload (the client went away) removes its temporary file at once.

use crate::{check_namespace, split_key, BlobError, BlobReader, BlobStore, ByteStream, ListedBlob, StoredBlob, Tally};
use futures::future::BoxFuture;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// Bytes buffered before a write to the temporary file (few large writes, not one per chunk).
const WRITE_BUFFER: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

/// Removes a temporary file unless the upload that owns it was completed.
struct Temporary(Option<PathBuf>);

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Best effort: whatever is left is swept at the next start-up.
            let _ = std::fs::remove_file(path);
        }
    }
}

impl LocalBlobStore {
    /// A store under `root` (for licensd: `<data dir>/files`); its folders are created.
    pub fn open(root: impl AsRef<Path>) -> std::io::Result<Self> {
        let root = root.as_ref();
        let store = Self { blobs: root.join("blobs"), tmp: root.join("tmp") };
        std::fs::create_dir_all(&store.blobs)?;
        std::fs::create_dir_all(&store.tmp)?;
        Ok(store)
    }

    /// The folder temporary files are written to (tests look for strays there).
    pub fn temporary_dir(&self) -> &Path {
        &self.tmp
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        let (namespace, digest) = split_key(key)?;
        Ok(self.blobs.join(namespace).join(digest))
    }

    async fn put_inner(&self, namespace: &str, mut body: ByteStream, max_bytes: u64) -> Result<StoredBlob, BlobError> {
        check_namespace(namespace)?;
        let name: [u8; 16] = rand::random();
        let tmp_path = self.tmp.join(format!("{}.part", hex::encode(name)));
        let mut temporary = Temporary(Some(tmp_path.clone()));
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&tmp_path).await?;
        let mut file = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut tally = Tally::new(max_bytes);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
            tally.add(&chunk)?;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        let file = file.into_inner();
        file.sync_all().await?;
        drop(file);
        let stored = tally.finish(namespace);
        let dir = self.blobs.join(namespace);
        tokio::fs::create_dir_all(&dir).await?;
        // Replaces an identical copy atomically if the bytes were stored before.
        tokio::fs::rename(&tmp_path, dir.join(&stored.sha256)).await?;
        temporary.0 = None;
        sync_dir(dir).await?;
        Ok(stored)
    }

    async fn open_inner(&self, key: &str, offset: u64) -> Result<BlobReader, BlobError> {
        let mut file = tokio::fs::File::open(self.path(key)?).await.map_err(not_found)?;
        let size = file.metadata().await?.len();
        if offset > size {
            return Err(BlobError::BadOffset { offset, size });
        }
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        Ok(Box::new(file))
    }

    /// Walks `blobs/<namespace>/<digest>`; a name that is not a valid key is skipped.
    async fn list_inner(&self) -> Result<Vec<ListedBlob>, BlobError> {
        let mut listed = Vec::new();
        let mut namespaces = tokio::fs::read_dir(&self.blobs).await?;
        while let Some(namespace) = namespaces.next_entry().await? {
            let Ok(namespace_name) = namespace.file_name().into_string() else { continue };
            if check_namespace(&namespace_name).is_err() || !namespace.file_type().await?.is_dir() {
                continue;
            }
            let mut blobs = tokio::fs::read_dir(namespace.path()).await?;
            while let Some(blob) = blobs.next_entry().await? {
                let Ok(digest) = blob.file_name().into_string() else { continue };
                let key = format!("{namespace_name}/{digest}");
                if split_key(&key).is_err() {
                    continue;
                }
                // Gone since the folder was read (removed by a deletion meanwhile): not listed.
                let Ok(metadata) = blob.metadata().await else { continue };
                listed.push(ListedBlob { key, modified: metadata.modified()?.into() });
            }
        }
        Ok(listed)
    }

    async fn sweep_inner(&self) -> Result<u64, BlobError> {
        let mut removed = 0;
        let mut entries = tokio::fs::read_dir(&self.tmp).await?;
        while let Some(entry) = entries.next_entry().await? {
            if entry.path().extension().is_some_and(|e| e == "part") {
                tokio::fs::remove_file(entry.path()).await?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed temporary files of interrupted uploads");
        }
        Ok(removed)
    }
}

fn not_found(e: std::io::Error) -> BlobError {
    if e.kind() == std::io::ErrorKind::NotFound {
        BlobError::NotFound
    } else {
        BlobError::Io(e)
    }
}

/// Makes a rename in `dir` durable.
async fn sync_dir(dir: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all()).await.map_err(std::io::Error::other)?
}

impl BlobStore for LocalBlobStore {
    fn put<'a>(
        &'a self,
        namespace: &'a str,
        body: ByteStream,
        max_bytes: u64,
    ) -> BoxFuture<'a, Result<StoredBlob, BlobError>> {
        Box::pin(self.put_inner(namespace, body, max_bytes))
    }

    fn open<'a>(&'a self, key: &'a str, offset: u64) -> BoxFuture<'a, Result<BlobReader, BlobError>> {
        Box::pin(self.open_inner(key, offset))
    }

    fn len<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, BlobError>> {
        Box::pin(async move { Ok(tokio::fs::metadata(self.path(key)?).await.map_err(not_found)?.len()) })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path(key)?).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ListedBlob>, BlobError>> {
        Box::pin(self.list_inner())
    }

    fn sweep_temporaries(&self) -> BoxFuture<'_, Result<u64, BlobError>> {
        Box::pin(self.sweep_inner())
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}
