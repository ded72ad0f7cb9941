//! The S3 blob store keeps the same contract as the local one, against moto's S3 server.

mod moto;

#[path = "contract.rs"]
#[allow(dead_code)]
mod local_contract;

use licensd_blobs::{BlobStore, S3BlobStore};

#[tokio::test]
async fn s3_store_keeps_the_contract() {
    let Some(moto) = tokio::task::spawn_blocking(moto::start).await.unwrap() else { return };
    let store = S3BlobStore::open(&moto.config()).unwrap();
    local_contract::contract(&store).await;
    // Fresh temporaries are another node's uploads in progress: the sweep leaves them.
    assert_eq!(store.sweep_temporaries().await.unwrap(), 0);
    assert_eq!(store.kind(), "s3");
    assert!(store.local_path(&format!("ns/{}", "a".repeat(64))).is_none());
}
