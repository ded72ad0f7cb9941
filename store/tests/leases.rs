//! Lease rows (several nodes on one Postgres): one holder at a time, renewals by the holder,
//! takeover only after expiry, release. SQLite is one node: every lease is always held.

use licensd_store::testing::TempDatabase;
use std::time::Duration;

#[tokio::test]
async fn one_holder_at_a_time_and_takeover_only_after_expiry() {
    let Some(database) = TempDatabase::postgres().await else { return };
    let store = database.open().await;
    assert!(store.hold_lease("webhooks", "node-a", 400).await.unwrap(), "a free role is taken");
    assert!(!store.hold_lease("webhooks", "node-b", 400).await.unwrap(), "held by another, unexpired");
    assert!(store.hold_lease("sql-projections", "node-b", 400).await.unwrap(), "roles are apart");
    assert!(store.hold_lease("webhooks", "node-a", 400).await.unwrap(), "the holder renews");
    let holders = store.lease_holders().await.unwrap();
    let webhooks = holders.iter().find(|(role, _, _)| role == "webhooks").unwrap();
    assert_eq!(webhooks.1, "node-a");
    assert!((0..=400).contains(&webhooks.2), "expires within the lease: {webhooks:?}");

    tokio::time::sleep(Duration::from_millis(600)).await;
    // Two nodes racing for the expired row: exactly one wins.
    let (b, c) =
        tokio::join!(store.hold_lease("webhooks", "node-b", 5000), store.hold_lease("webhooks", "node-c", 5000));
    assert!(b.unwrap() ^ c.unwrap(), "exactly one takes the expired role");
    assert!(!store.hold_lease("webhooks", "node-a", 5000).await.unwrap(), "the old holder lost it");
    let term = store.query_text("SELECT CAST(term AS TEXT) FROM leases WHERE role = 'webhooks'", &[]).await.unwrap();
    assert_eq!(term, [Some("2".to_string())], "the term counts hand-overs");

    store.release_leases("node-b").await.unwrap();
    store.release_leases("node-c").await.unwrap();
    assert!(store.hold_lease("webhooks", "node-a", 5000).await.unwrap(), "released roles are free at once");
    store.close().await;
}

#[tokio::test]
async fn sqlite_is_one_node_and_always_holds() {
    let database = TempDatabase::sqlite();
    let store = database.open().await;
    assert!(store.hold_lease("webhooks", "node-a", 1000).await.unwrap());
    assert!(store.hold_lease("webhooks", "node-b", 1000).await.unwrap());
    assert!(store.lease_holders().await.unwrap().is_empty());
    store.close().await;
}
