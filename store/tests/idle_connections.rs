//! Pooled Postgres connections that the server dropped while they sat idle (a server restart,
//! an administrator's `pg_terminate_backend`, a firewall's idle timeout) are found out before
//! they are handed out: the next write and the next read succeed on fresh connections instead
//! of failing once per dead connection. The pool no longer pings a connection used moments ago
//! (a round trip per acquire on the hot path), so this is what keeps the idle ones safe.
//! Postgres only (`LICENSD_TEST_POSTGRES_URL`).

use licensd_store::testing::{TempDatabase, POSTGRES_URL_ENV};
use licensd_store::{AppendRequest, EventStore, ExpectedVersion, NewEvent};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

fn append(stream: &str) -> Vec<AppendRequest> {
    let event = NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "Tested".into(),
        schema_version: 1,
        payload: json!({ "stream": stream }),
        metadata: json!({}),
    };
    vec![AppendRequest::new(stream, ExpectedVersion::NoStream, vec![event])]
}

/// Ends every session of `database` but the caller's; how many it ended.
async fn terminate_sessions(database: &str) -> i64 {
    let admin = std::env::var(POSTGRES_URL_ENV).unwrap();
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()) AS ended",
    )
    .bind(database)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    ended
}

#[tokio::test]
async fn connections_dropped_while_idle_are_replaced_before_use() {
    let Some(db) = TempDatabase::postgres().await else { return };
    let store = db.open().await;
    // Several connections in the pool: concurrent readers each take one.
    let first = store.append_batch(append("idle-1")).await.unwrap();
    assert!(first[0].is_ok(), "{first:?}");
    // (Stream reads: they do not wait for the cluster-wide horizon that `read_all` respects.)
    let (a, b, c, d) = tokio::join!(
        store.read_stream("idle-1", 1),
        store.read_stream("idle-1", 1),
        store.read_stream("idle-1", 1),
        store.read_stream("idle-1", 1)
    );
    for read in [a, b, c, d] {
        assert_eq!(read.unwrap().len(), 1);
    }

    // Idle past the pool's threshold, then every server session of the database is ended.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let database = db.url.rsplit_once('/').unwrap().1.to_string();
    assert!(terminate_sessions(&database).await >= 1, "the store held connections to end");

    // Each operation below would otherwise meet a dead connection first.
    for n in 0..4 {
        let events = store.read_stream("idle-1", 1).await.expect("a read after the sessions ended");
        assert_eq!(events.len(), 1, "read {n}");
    }
    let second = store.append_batch(append("idle-2")).await.expect("a write after the sessions ended");
    assert!(second[0].is_ok(), "{second:?}");
    assert_eq!(store.read_stream("idle-2", 1).await.unwrap().len(), 1);
}
