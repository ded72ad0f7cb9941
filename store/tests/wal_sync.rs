//! SQLite with `synchronous=full`: the log's commits are synced outside SQLite's write lock, and
//! no write is answered before the sync that covers it. Syncs are held back (the store's test
//! hook) while appends commit: the commits become visible to other connections, the next batch
//! commits meanwhile (the lock is free during the sync), yet nobody is answered and the log's
//! tail readers (`read_all`, the whole-log scan) see nothing until the sync is let go.

use licensd_store::testing::TempDatabase;
use licensd_store::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, Position, SqlValue, Statement, Store, UPSERT_PII,
};
use serde_json::json;
use std::time::Duration;

fn request(stream: &str) -> AppendRequest {
    let event = NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "Tested".into(),
        schema_version: 1,
        payload: json!({ "stream": stream }),
        metadata: json!({}),
    };
    AppendRequest::new(stream.to_string(), ExpectedVersion::Any, vec![event])
}

/// Rows in the log as a reader connection sees them (committed, synced or not).
async fn committed_rows(store: &Store) -> i64 {
    let count = store.query_text("SELECT CAST(COUNT(*) AS TEXT) FROM events", &[]).await.unwrap();
    count[0].as_deref().unwrap().parse().unwrap()
}

async fn until_committed(store: &Store, rows: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while committed_rows(store).await < rows {
        assert!(tokio::time::Instant::now() < deadline, "the appends never committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Events the whole-log scan hands over.
async fn scanned(store: &Store) -> usize {
    let (mut pages, reader) = store.scan_log(Position::START, 100, |page| page.len());
    let mut events = 0;
    while let Some(page) = pages.recv().await {
        events += page;
    }
    reader.await.unwrap().unwrap();
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_answered_only_after_the_wal_sync_and_the_lock_is_free_during_it() {
    let database = TempDatabase::sqlite();
    let store = database.open().await;
    let Store::Sqlite(sqlite) = &store else { unreachable!("a SQLite URL") };
    let held = sqlite.hold_wal_syncs().await.expect("synchronous=full syncs the WAL itself");

    let first = tokio::spawn({
        let store = store.clone();
        async move { store.append(request("s-1")).await }
    });
    until_committed(&store, 1).await;
    // The first batch's sync is held, yet the write lock is free: a second batch commits.
    let second = tokio::spawn({
        let store = store.clone();
        async move { store.append(request("s-2")).await }
    });
    until_committed(&store, 2).await;
    // A write outside the appends (the PII vault) waits for the sync too.
    let pii = tokio::spawn({
        let store = store.clone();
        let row = Statement::new(UPSERT_PII, ["subject".into(), "email".into(), SqlValue::Text(Some("sealed".into()))]);
        async move { store.execute(&[row]).await }
    });

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!first.is_finished(), "an append was answered before its commit was synced");
    assert!(!second.is_finished(), "an append was answered before its commit was synced");
    assert!(!pii.is_finished(), "a write was answered before its commit was synced");
    assert!(store.read_all(Position::START, 10).await.unwrap().is_empty(), "the tail read unsynced events");
    assert!(store.read_log_page(Position::START, 10).await.unwrap().is_empty(), "a page held unsynced events");
    assert_eq!(scanned(&store).await, 0, "the whole-log scan read unsynced events");

    drop(held);
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        (first.await.unwrap(), second.await.unwrap(), pii.await.unwrap())
    })
    .await
    .expect("the appends are answered once the sync is let go");
    let (first, second, pii) = answered;
    assert_eq!(first.unwrap().version, 1);
    assert_eq!(second.unwrap().version, 1);
    assert_eq!(pii.unwrap(), 1);
    assert_eq!(store.read_all(Position::START, 10).await.unwrap().len(), 2, "synced events are read");
    assert_eq!(store.read_log_page(Position::START, 10).await.unwrap().len(), 2, "and paged");
    assert_eq!(scanned(&store).await, 2);
}
