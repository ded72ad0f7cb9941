//! The Kafka relay's checkpoint: per topic, forward only, Postgres only.

use licensd_store::testing::TempDatabase;
use licensd_store::{Position, StoreError};

#[tokio::test]
async fn the_checkpoint_moves_only_forward_per_topic() {
    let Some(database) = TempDatabase::postgres().await else { return };
    let store = database.open().await;
    assert_eq!(store.relay_checkpoint("events").await.unwrap(), Position::START, "none yet: the log's start");
    let (early, later) = (Position { tx: 900, seq: 7 }, Position { tx: 901, seq: 3 });
    store.move_relay_checkpoint("events", later).await.unwrap();
    // A relay that lost its lease finishing an older step cannot move it back.
    store.move_relay_checkpoint("events", early).await.unwrap();
    assert_eq!(store.relay_checkpoint("events").await.unwrap(), later);
    assert_eq!(store.relay_checkpoint("other-topic").await.unwrap(), Position::START, "per topic");
    // Racing moves keep the furthest.
    let moves = (1..=20).map(|seq| {
        let store = store.clone();
        tokio::spawn(async move { store.move_relay_checkpoint("raced", Position { tx: 5, seq }).await })
    });
    for moved in futures_like(moves).await {
        moved.unwrap();
    }
    assert_eq!(store.relay_checkpoint("raced").await.unwrap(), Position { tx: 5, seq: 20 });
    // Hostile topic names are data, not SQL, and Postgres's refusal of NUL is an error, not a panic.
    store.move_relay_checkpoint("x'); DROP TABLE kafka_relay; --", early).await.unwrap();
    assert_eq!(store.relay_checkpoint("x'); DROP TABLE kafka_relay; --").await.unwrap(), early);
    assert!(store.move_relay_checkpoint("nul\u{0}", early).await.is_err());
}

async fn futures_like<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn sqlite_has_no_relay() {
    let database = TempDatabase::sqlite();
    let store = database.open().await;
    assert!(matches!(store.relay_checkpoint("events").await, Err(StoreError::Config(_))));
    assert!(matches!(store.move_relay_checkpoint("events", Position::START).await, Err(StoreError::Config(_))));
}
