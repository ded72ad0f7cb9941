//! The blob store contract, on the local directory store (the S3 store runs the same checks in
//! `s3.rs` against a local S3-compatible server).

use bytes::Bytes;
use futures::StreamExt;
use licensd_blobs::{BlobError, BlobStore, ByteStream, LocalBlobStore};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// `chunks` chunks of `size` bytes, generated as they are read.
pub fn generated(chunks: usize, size: usize, seed: u8) -> ByteStream {
    futures::stream::iter(0..chunks).map(move |i| Ok(Bytes::from(vec![seed.wrapping_add(i as u8); size]))).boxed()
}

fn expected(chunks: usize, size: usize, seed: u8) -> (Vec<u8>, String) {
    let bytes: Vec<u8> = (0..chunks).flat_map(|i| vec![seed.wrapping_add(i as u8); size]).collect();
    let sha = hex::encode(Sha256::digest(&bytes));
    (bytes, sha)
}

async fn read_all(store: &dyn BlobStore, key: &str, offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    store.open(key, offset).await.unwrap().read_to_end(&mut out).await.unwrap();
    out
}

pub async fn contract(store: &dyn BlobStore) {
    let ns = "0b1c2d3e-aaaa-bbbb-cccc-000000000001";
    let stored = store.put(ns, generated(5, 1000, 7), 10_000).await.unwrap();
    let (bytes, sha) = expected(5, 1000, 7);
    assert_eq!((stored.size, stored.sha256.as_str()), (5000, sha.as_str()));
    assert_eq!(stored.key, format!("{ns}/{sha}"));
    assert_eq!(store.len(&stored.key).await.unwrap(), 5000);
    assert_eq!(read_all(store, &stored.key, 0).await, bytes);
    assert_eq!(read_all(store, &stored.key, 4321).await, bytes[4321..]);
    assert_eq!(read_all(store, &stored.key, 5000).await, b"");
    assert!(matches!(store.open(&stored.key, 5001).await.err(), Some(BlobError::BadOffset { .. })));

    // The same bytes again: the same key, still readable.
    let again = store.put(ns, generated(5, 1000, 7), 10_000).await.unwrap();
    assert_eq!(again, stored);
    assert_eq!(read_all(store, &stored.key, 0).await, bytes);

    // Over the limit: refused, nothing stored.
    let too_large = store.put(ns, generated(11, 1000, 9), 10_000).await;
    assert!(matches!(too_large, Err(BlobError::TooLarge { limit: 10_000 })), "{too_large:?}");
    let (_, big_sha) = expected(11, 1000, 9);
    assert!(matches!(store.len(&format!("{ns}/{big_sha}")).await, Err(BlobError::NotFound)));

    // A body that fails half-way stores nothing.
    let failing: ByteStream = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"half")),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away")),
    ])
    .boxed();
    assert!(matches!(store.put(ns, failing, 10_000).await, Err(BlobError::Body(_))));

    // An empty blob is a blob.
    let empty = store.put(ns, generated(0, 0, 0), 10).await.unwrap();
    assert_eq!(empty.size, 0);
    assert_eq!(read_all(store, &empty.key, 0).await, b"");

    // Keys that are not keys are refused.
    for bad in ["../../etc/passwd", "x", &format!("{ns}/../{sha}")] {
        assert!(matches!(store.open(bad, 0).await.err(), Some(BlobError::InvalidKey)), "{bad}");
    }
    assert!(matches!(store.put("../x", generated(1, 1, 1), 10).await, Err(BlobError::InvalidKey)));

    // The listing holds the complete blobs (not the refused or failed uploads), written just now.
    let started = chrono::Utc::now() - chrono::Duration::minutes(5);
    let mut listed = store.list().await.unwrap();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let mut keys: Vec<&str> = listed.iter().map(|b| b.key.as_str()).collect();
    let mut wanted = vec![stored.key.as_str(), empty.key.as_str()];
    wanted.sort();
    keys.dedup();
    assert_eq!(keys, wanted, "{listed:?}");
    assert!(listed.iter().all(|b| b.modified > started && b.modified <= chrono::Utc::now()), "{listed:?}");

    store.delete(&stored.key).await.unwrap();
    store.delete(&stored.key).await.unwrap();
    assert!(matches!(store.len(&stored.key).await, Err(BlobError::NotFound)));
    let listed = store.list().await.unwrap();
    assert_eq!(listed.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(), [empty.key.as_str()], "deleted: not listed");
    assert!(matches!(store.open(&stored.key, 0).await.err(), Some(BlobError::NotFound)));
}

#[tokio::test]
async fn local_store_keeps_the_contract() {
    let dir = std::env::temp_dir().join(format!("licensd-blobs-{}", hex::encode(rand::random::<[u8; 8]>())));
    let store = LocalBlobStore::open(&dir).unwrap();
    contract(&store).await;
    // No upload above, failed or not, left a temporary file.
    assert_eq!(std::fs::read_dir(store.temporary_dir()).unwrap().count(), 0);
    std::fs::write(store.temporary_dir().join("stale.part"), b"partial").unwrap();
    assert_eq!(store.sweep_temporaries().await.unwrap(), 1);
    assert_eq!(std::fs::read_dir(store.temporary_dir()).unwrap().count(), 0);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Concurrent uploads of the same bytes (one key) and of different bytes all end complete.
#[tokio::test]
async fn concurrent_uploads_of_one_key_leave_one_whole_blob() {
    let dir = std::env::temp_dir().join(format!("licensd-blobs-{}", hex::encode(rand::random::<[u8; 8]>())));
    let store = std::sync::Arc::new(LocalBlobStore::open(&dir).unwrap());
    let ns = "0b1c2d3e-aaaa-bbbb-cccc-000000000002";
    let tasks: Vec<_> = (0..16u8)
        .map(|i| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move { store.put(ns, generated(64, 4096, i % 2), u64::MAX).await.unwrap() })
        })
        .collect();
    for task in tasks {
        let stored = task.await.unwrap();
        let (bytes, sha) = expected(64, 4096, if stored.sha256 == expected(64, 4096, 0).1 { 0 } else { 1 });
        assert_eq!(stored.sha256, sha);
        assert_eq!(read_all(&*store, &stored.key, 0).await, bytes);
    }
    assert_eq!(std::fs::read_dir(store.temporary_dir()).unwrap().count(), 0);
    std::fs::remove_dir_all(dir).unwrap();
}
