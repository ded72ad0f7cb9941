//! Group commit isolates a refused value to the request that carries it: one request with a
//! NUL character in its batch fails alone with a data error, and every other request of the same
//! batch (other tenants' too) commits. Runs on SQLite and on Postgres (`LICENSD_TEST_POSTGRES_URL`).

use licensd_commands::{CommandError, Writer, WriterConfig};
use licensd_store::testing::TempDatabase;
use licensd_store::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Store, StoreError};
use serde_json::json;
use std::sync::atomic::Ordering;
use uuid::Uuid;

fn append(stream: &str, payload: serde_json::Value, metadata: serde_json::Value) -> AppendRequest {
    let event =
        NewEvent { event_id: Uuid::new_v4(), event_type: "Tested".into(), schema_version: 1, payload, metadata };
    AppendRequest::new(stream, ExpectedVersion::Any, vec![event])
}

async fn one_bad_request_never_fails_its_batch(store: Store) {
    let (writer, task) = Writer::spawn(store.clone(), WriterConfig::default());
    let good = |tenant: usize| append(&format!("tenant-{tenant}"), json!({ "nonce": "n", "hwid": "h" }), json!({}));
    let bad_payload = append("tenant-bad-payload", json!({ "hwid": "a\u{0}b" }), json!({}));
    let bad_metadata = append("tenant-bad-metadata", json!({}), json!({ "label": "\u{0}" }));
    let bad_stream = append("tenant-\u{0}", json!({}), json!({}));
    // Queued together before the writer runs (one thread): they share one batch.
    let (a, b, c, d, e, f) = tokio::join!(
        writer.append(good(1)),
        writer.append(bad_payload),
        writer.append(good(2)),
        writer.append(bad_stream),
        writer.append(bad_metadata),
        writer.append(good(3)),
    );
    assert_eq!(writer.stats().batches.load(Ordering::Relaxed), 1, "the appends shared one batch");
    assert_eq!(writer.stats().failed_batches.load(Ordering::Relaxed), 0);
    let data_error = |r: &Result<_, CommandError>| matches!(r, Err(CommandError::Store(StoreError::InvalidData(_))));
    assert!(data_error(&d), "NUL in a stream id: {d:?}");
    if store.backend() == "postgres" {
        assert!(data_error(&b), "NUL in a jsonb payload: {b:?}");
        assert!(data_error(&e), "NUL in jsonb metadata: {e:?}");
    }
    for (tenant, result) in [(1, a), (2, c), (3, f)] {
        assert_eq!(result.expect("a good request of the batch commits").version, 1);
        assert_eq!(store.read_stream(&format!("tenant-{tenant}"), 1).await.unwrap().len(), 1);
    }
    writer.close();
    task.await.unwrap();
}

#[tokio::test]
async fn sqlite_one_bad_request_never_fails_its_batch() {
    let db = TempDatabase::sqlite();
    one_bad_request_never_fails_its_batch(db.open().await).await;
}

#[tokio::test]
async fn postgres_one_bad_request_never_fails_its_batch() {
    let Some(db) = TempDatabase::postgres().await else { return };
    one_bad_request_never_fails_its_batch(db.open().await).await;
}
