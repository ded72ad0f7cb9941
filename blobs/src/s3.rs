//! An S3-compatible bucket behind [`BlobStore`], for several licensd nodes sharing one store.
//!
//! Objects are `blobs/<namespace>/<sha256>`. An upload streams into a multipart upload under
//! `tmp/<random>` (the SHA-256, and so the final name, is known only at the end), then is
//! copied to its final name and the temporary object deleted: a reader never sees a partial
//! blob. Memory per upload is bounded by the part size (5 MiB) times the parts in flight.
//! [`BlobStore::sweep_temporaries`] deletes `tmp/` objects older than an hour (younger ones may
//! be another node's uploads in progress); multipart uploads that were never completed are the
//! bucket's lifecycle rule's to abort (see README).

use crate::{check_namespace, split_key, BlobError, BlobReader, BlobStore, ByteStream, ListedBlob, StoredBlob, Tally};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
use std::path::PathBuf;
use std::sync::Arc;

/// Parts uploaded at once per upload (each up to the part size).
const PARTS_IN_FLIGHT: usize = 4;
/// Temporary objects younger than this are left to the node that may still be writing them.
const TEMPORARY_GRACE: chrono::Duration = chrono::Duration::hours(1);

/// Where the bucket is and how to sign in to it.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    pub bucket: String,
    /// `https://…` of an S3-compatible service; `None`: AWS itself (by region).
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Accept an `http://` endpoint (a local S3-compatible server).
    pub allow_http: bool,
}

#[derive(Debug, Clone)]
pub struct S3BlobStore {
    store: Arc<AmazonS3>,
}

fn backend(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        other => BlobError::Backend(other.to_string()),
    }
}

impl S3BlobStore {
    pub fn open(config: &S3Config) -> Result<Self, BlobError> {
        // The TLS stack uses the process's crypto provider; ring is the one licensd ships.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http);
        if let Some(endpoint) = &config.endpoint {
            // Path-style addressing: what S3-compatible servers accept without wildcard DNS.
            builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|e| BlobError::Backend(e.to_string()))?;
        Ok(Self { store: Arc::new(store) })
    }

    fn object(key: &str) -> Result<ObjectPath, BlobError> {
        let (namespace, digest) = split_key(key)?;
        Ok(ObjectPath::from(format!("blobs/{namespace}/{digest}")))
    }

    async fn put_inner(&self, namespace: &str, mut body: ByteStream, max_bytes: u64) -> Result<StoredBlob, BlobError> {
        check_namespace(namespace)?;
        let name: [u8; 16] = rand::random();
        let temporary = ObjectPath::from(format!("tmp/{}", hex::encode(name)));
        let upload = self.store.put_multipart(&temporary).await.map_err(backend)?;
        let mut writer = WriteMultipart::new(upload);
        let mut tally = Tally::new(max_bytes);
        let streamed: Result<(), BlobError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
                tally.add(&chunk)?;
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(backend)?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        if let Err(e) = streamed {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.finish().await.map_err(backend)?;
        let stored = tally.finish(namespace);
        let copied = self.store.copy(&temporary, &Self::object(&stored.key)?).await.map_err(backend);
        let _ = self.store.delete(&temporary).await;
        copied?;
        Ok(stored)
    }

    async fn open_inner(&self, key: &str, offset: u64) -> Result<BlobReader, BlobError> {
        let object = Self::object(key)?;
        let size = self.store.head(&object).await.map_err(backend)?.size;
        if offset > size {
            return Err(BlobError::BadOffset { offset, size });
        }
        if offset == size {
            return Ok(Box::new(tokio::io::empty()));
        }
        let options = GetOptions { range: Some(GetRange::Offset(offset)), ..Default::default() };
        let stream = self.store.get_opts(&object, options).await.map_err(backend)?.into_stream();
        let stream = stream.map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    /// Lists `blobs/` (paged by the client); an object whose name is not a valid key is skipped.
    async fn list_inner(&self) -> Result<Vec<ListedBlob>, BlobError> {
        let prefix = ObjectPath::from("blobs");
        self.store
            .list(Some(&prefix))
            .map_err(backend)
            .try_filter_map(|meta| {
                let key = meta.location.as_ref().strip_prefix("blobs/").unwrap_or_default().to_string();
                let listed = split_key(&key).is_ok().then_some(ListedBlob { key, modified: meta.last_modified });
                futures::future::ready(Ok(listed))
            })
            .try_collect()
            .await
    }

    async fn sweep_inner(&self) -> Result<u64, BlobError> {
        let cutoff = chrono::Utc::now() - TEMPORARY_GRACE;
        let prefix = ObjectPath::from("tmp");
        let stale: Vec<ObjectPath> = self
            .store
            .list(Some(&prefix))
            .try_filter(|meta| futures::future::ready(meta.last_modified < cutoff))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(backend)?;
        for location in &stale {
            self.store.delete(location).await.map_err(backend)?;
        }
        Ok(stale.len() as u64)
    }
}

impl BlobStore for S3BlobStore {
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
        Box::pin(async move { Ok(self.store.head(&Self::object(key)?).await.map_err(backend)?.size) })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            match self.store.delete(&Self::object(key)?).await {
                Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
                Err(e) => Err(backend(e)),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ListedBlob>, BlobError>> {
        Box::pin(self.list_inner())
    }

    fn sweep_temporaries(&self) -> BoxFuture<'_, Result<u64, BlobError>> {
        Box::pin(self.sweep_inner())
    }

    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}
